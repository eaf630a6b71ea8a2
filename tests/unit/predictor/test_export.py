"""export + compiled: a model compiled ahead of time answers like the torch path, without torch.

The bar of issue 27: same labels, boxes within 1 px in the sent picture's pixels, scores
within 0.01 at fp32, on the demo detector (trained) and on random weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.synthetic import write_dataset
from predictor import export
from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline import compiled
from predictor.pipeline.detections import RawDetections
from predictor.pipeline.engine import Engine
from tests.support.servers import save_random_model

REPO = Path(__file__).resolve().parents[3]
SHOWN = 0.1  # detections at or above this score are compared (the demo is trained)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Unseen demo pictures of several sizes and aspect ratios."""
    folder = tmp_path_factory.mktemp("pictures")
    write_dataset(folder, count=12, seed=31_337, mixed_fraction=0.5, progress=False)
    out = []
    for i, path in enumerate(sorted((folder / "images").iterdir())):
        image = Image.open(path).convert("RGB")
        size = [(640, 480), (480, 640), (1280, 720), (333, 517)][i % 4]
        out.append(np.asarray(image.resize(size)))
    return out


def _torch_answers(model_dir: Path, pics: list[np.ndarray]) -> list[RawDetections]:
    engine = Engine(ModelConfig(model_dir=str(model_dir), device="cpu", cpu_accel=False))
    engine.load()
    return engine.run(pics)


def _assert_same(want: list[RawDetections], got: list[RawDetections]) -> int:
    """Every shown torch detection has its twin (label, score within 0.01, box within
    1 px), and the counts agree; returns how many were compared."""
    compared = 0
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        a_shown, b_shown = a.scores >= SHOWN + 0.01, b.scores >= SHOWN - 0.01
        assert a_shown.sum() <= b_shown.sum() <= (a.scores >= SHOWN - 0.01).sum(), i
        for box, score, label in zip(a.boxes[a_shown], a.scores[a_shown], a.labels[a_shown],
                                     strict=True):
            twin = (b.labels == label) & (np.abs(b.scores - score) <= 0.01)
            assert twin.any(), (i, label, score)
            assert np.abs(b.boxes[twin] - box).max(axis=1).min() <= 1.0, (i, label, box)
            compared += 1
    return compared


def _export(model_dir: Path, out: Path) -> compiled.CompiledModel:
    manifest = export.export(model_dir, out, precision="fp32")
    assert manifest["precision"] == "fp32"
    return compiled.CompiledModel(out)


def test_the_compiled_demo_answers_like_the_torch_path(
        tmp_path: Path, pictures: list[np.ndarray]) -> None:
    runtime = _export(DEMO_MODEL_DIR, tmp_path / "demo")
    assert _assert_same(_torch_answers(DEMO_MODEL_DIR, pictures), runtime.run(pictures)) > 20
    manifest = json.loads((tmp_path / "demo" / "compiled.json").read_text(encoding="utf-8"))
    assert manifest["labels"] == (DEMO_MODEL_DIR / "labels.txt").read_text(encoding="utf-8").split()
    assert set(manifest["versions"]) == {"torch", "torchvision", "openvino"}
    assert manifest["route"] == "torch.export"


def test_each_step_around_the_graph_matches_torchvision() -> None:
    """Resize, box decoding and per-class NMS, each against torchvision's own on random
    input with distinct scores (end to end, untrained weights give near-equal scores whose
    NMS order last-bit differences decide, in torch as much as here)."""
    import torch
    import torchvision
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(0)
    image = rng.random((123, 217, 3), dtype=np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None],
                                           size=(320, 320), mode="bilinear",
                                           align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(compiled.resize_bilinear(image, 320, 320) - want).max() < 1e-5
    anchors = np.sort(rng.random((500, 4), dtype=np.float32) * 300, axis=1)[:, [0, 1, 2, 3]]
    anchors[:, 2:] = anchors[:, :2] + 5 + rng.random((500, 2), dtype=np.float32) * 50
    deltas = rng.normal(size=(500, 4)).astype(np.float32) * 3
    weights = (10.0, 10.0, 5.0, 5.0)
    coder = BoxCoder(weights)
    want = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors)).numpy()
    assert np.abs(compiled.decode_boxes(deltas, anchors, weights) - want).max() < 1e-3
    boxes = compiled.decode_boxes(deltas, anchors, weights).clip(0, 320)
    scores = rng.permutation(500).astype(np.float32) / 500  # distinct
    labels = rng.integers(1, 5, 500)
    keep = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                       torch.from_numpy(labels), 0.45).numpy()
    assert np.array_equal(compiled.batched_nms(boxes, scores, labels, 0.45), keep)


def test_an_architecture_it_cannot_compile_gets_one_line_naming_the_torch_image(
        tmp_path: Path) -> None:
    folder = save_random_model(tmp_path / "model", "fasterrcnn_mobilenet_v3_large_320_fpn")
    done = subprocess.run([sys.executable, "-m", "predictor.export", "--model_dir",
                           str(folder), "--out", str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "torch image" in errors[0]
    assert not (tmp_path / "out").exists()


def test_the_compiled_runtime_never_imports_torch(tmp_path: Path) -> None:
    _export(DEMO_MODEL_DIR, tmp_path / "demo")
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from predictor.pipeline.compiled import CompiledModel\n"
        f"model = CompiledModel(Path({str(tmp_path / 'demo')!r}))\n"
        "dets = model.run([np.zeros((480, 640, 3), np.uint8)])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "print(len(dets), loaded)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1 []", done.stdout


def test_a_stale_or_foreign_manifest_is_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / compiled.MANIFEST).write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(compiled.CompiledError, match="compiled.json: format 'other/9'"):
        compiled.Manifest.read(tmp_path)
