"""cpu_engine: the OpenVINO engine gives eager's detections, or stays eager and says why.

The accuracy gate of issue 20 lives here (fp32: every detection matched; bf16 and int8:
mAP@0.5 on held-out pictures within 0.005 / 0.01 of eager, int8 small-object recall within
0.02), run on the demo detector's 50 held-out pictures.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from client.evaluate import evaluate_detections, load_coco
from demo.synthetic import write_dataset
from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline import cpu_engine, ov_graph, ov_shapes, precision
from predictor.pipeline.bn_fold import fuse_conv_bn
from predictor.pipeline.detections import RawDetections
from predictor.pipeline.engine import Engine

HELD_OUT_SEED = 987_654  # the demo's held-out pictures (never trained on)
CALIBRATION_SEED = 4_242  # int8 calibrates on other pictures than it is judged on
MIN_SCORE = 0.05  # the model's own cut
MARGIN = 0.02  # a detection this close to the cut may fall on either side of it
HAS_BF16 = precision.Precision.BF16 in precision.native_precisions()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], Any, Any]:
    folder = tmp_path_factory.mktemp("held-out")
    annotations = write_dataset(folder, count=50, seed=HELD_OUT_SEED, mixed_fraction=0.5,
                                progress=False)
    paths, truth, names = load_coco(folder / "images", annotations)
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return pictures, truth, names


@pytest.fixture(scope="module")
def eager_detections(held_out: tuple[list[np.ndarray], Any, Any]) -> list[RawDetections]:
    return _detect(_engine(None, accel=False), held_out[0])


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    write_dataset(folder, count=32, seed=CALIBRATION_SEED, mixed_fraction=0.5, progress=False)
    return folder / "images"


def _engine(tmp_path: Path | None, accel: bool = True, **flags: Any) -> Engine:
    cache = str(tmp_path / "cache") if tmp_path is not None else ""
    engine = Engine(ModelConfig(model_dir=str(DEMO_MODEL_DIR), device="cpu", cpu_accel=accel,
                                cache_dir=cache, **flags))
    engine.load()
    return engine


def _detect(engine: Engine, pictures: list[np.ndarray]) -> list[RawDetections]:
    out: list[RawDetections] = []
    for start in range(0, len(pictures), 8):
        out += engine.run(pictures[start:start + 8])
    return out


def _unmatched(a: RawDetections, b: RawDetections) -> list[str]:
    """Detections of ``a`` clear of the cut that ``b`` lacks (same label, IoU, score)."""
    problems = []
    iou = (torchvision.ops.box_iou(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes)).numpy()
           if len(a.boxes) and len(b.boxes) else None)
    for i in range(len(a.scores)):
        if a.scores[i] < MIN_SCORE + MARGIN:
            continue
        if iou is None:
            problems.append(f"detection {i} (score {a.scores[i]:.3f}) missing")
            continue
        same = (b.labels == a.labels[i]) & (np.abs(b.scores - a.scores[i]) <= 0.01)
        best = float(iou[i][same].max()) if same.any() else 0.0
        if best < 0.99:
            problems.append(f"detection {i} (label {a.labels[i]}, score {a.scores[i]:.3f}): "
                            f"best IoU {best:.3f} among same-label boxes within 0.01 of its score")
    return problems


def _predictions(dets: list[RawDetections]) -> list[list[tuple[Any, float, int]]]:
    return [[(d.boxes[i].tolist(), float(d.scores[i]), int(d.labels[i]))
             for i in range(len(d.scores))] for d in dets]


def _map50(truth: Any, names: Any, dets: list[RawDetections]) -> float:
    return float(evaluate_detections(truth, _predictions(dets), names).map50)


def _small_recall(truth: Any, dets: list[RawDetections]) -> float:
    """Recall (IoU >= 0.5, same label) of the smallest quarter of the true boxes."""
    boxes = [(i, np.asarray(b, dtype=np.float32), int(label))
             for i, image in enumerate(truth) for b, label in image]
    areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for _, b, _ in boxes])
    small = [boxes[k] for k in np.argsort(areas)[:max(1, len(boxes) // 4)]]
    hits = 0
    for i, box, label in small:
        d = dets[i]
        mine = d.boxes[d.labels == label]
        if len(mine):
            iou = torchvision.ops.box_iou(torch.from_numpy(box[None]), torch.from_numpy(mine))
            hits += bool((iou >= 0.5).any())
    return hits / len(small)


def _on_engine(engine: Engine) -> None:
    module = engine.loaded.module if engine.loaded else None
    # The engine really is in use, so a gate cannot pass by comparing eager to eager.
    assert isinstance(getattr(module, "backbone", None), ov_graph.EngineBackbone)
    assert isinstance(getattr(module, "head", None), ov_graph.EngineHead)


def test_fp32_gate_every_detection_matches_eager(
        held_out: tuple[list[np.ndarray], Any, Any], eager_detections: list[RawDetections],
        tmp_path: Path) -> None:
    pictures, truth, names = held_out
    fast = _engine(tmp_path, cpu_precision="fp32")
    _on_engine(fast)
    got = _detect(fast, pictures)
    problems = [f"picture {k}: {p}"
                for k, (a, b) in enumerate(zip(eager_detections, got, strict=True))
                for p in _unmatched(a, b) + _unmatched(b, a)]
    assert not problems, "\n".join(problems[:20])
    assert sum(len(d.scores) for d in eager_detections) > 100  # the pictures have detections
    map_eager = _map50(truth, names, eager_detections)
    assert map_eager >= 0.9
    assert _map50(truth, names, got) == pytest.approx(map_eager, abs=0.002)


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native bf16 (AVX512_BF16 or AMX)")
def test_bf16_gate_map_within_0_005_of_eager(
        held_out: tuple[list[np.ndarray], Any, Any], eager_detections: list[RawDetections],
        tmp_path: Path) -> None:
    pictures, truth, names = held_out
    fast = _engine(tmp_path)  # auto: bf16 on this CPU
    _on_engine(fast)
    assert "OpenVINO bf16" in fast.engine_report
    got = _detect(fast, pictures)
    assert abs(_map50(truth, names, got) - _map50(truth, names, eager_detections)) <= 0.005


@pytest.mark.slow
def test_int8_gate_map_and_small_object_recall(
        held_out: tuple[list[np.ndarray], Any, Any], eager_detections: list[RawDetections],
        calibration_dir: Path, tmp_path: Path) -> None:
    pictures, truth, names = held_out
    fast = _engine(tmp_path, cpu_precision="int8", calibration_dir=str(calibration_dir))
    _on_engine(fast)
    assert "OpenVINO int8" in fast.engine_report
    got = _detect(fast, pictures)
    assert abs(_map50(truth, names, got) - _map50(truth, names, eager_detections)) <= 0.01
    assert _small_recall(truth, eager_detections) - _small_recall(truth, got) <= 0.02


def test_int8_without_pictures_is_refused_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        fast = _engine(tmp_path, cpu_precision="int8")
    assert "int8 refused: it needs --calibration_dir" in fast.engine_report
    assert "OpenVINO" in fast.engine_report  # it runs on the next precision instead
    assert any("CPU path: " in r.getMessage() for r in caplog.records)


def test_nothing_on_the_runtime_path_uses_torchscript(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("TorchScript was used")

    for name in ("trace", "script", "freeze", "load", "save"):
        monkeypatch.setattr(torch.jit, name, refuse)
    fast = _engine(tmp_path, cpu_precision="fp32")
    _on_engine(fast)
    fast.run([np.zeros((480, 640, 3), dtype=np.uint8)])


def _demo_module() -> nn.Module:
    from predictor.pipeline.loader import load_model

    module = load_model(ModelConfig(model_dir=str(DEMO_MODEL_DIR))).module.eval()
    fuse_conv_bn(module)
    return module


def _options(cache: Path | None, **kw: Any) -> cpu_engine.Options:
    return cpu_engine.Options(cache_dir=str(cache) if cache else None, **{
        "precision": "fp32", **kw})


def test_cache_is_reused_across_starts(tmp_path: Path) -> None:
    sample = [torch.rand(3, 240, 320)]
    first, second = _demo_module(), _demo_module()
    cache = tmp_path / "cache"
    report = cpu_engine.accelerate(first, "demo", sample, _options(cache))
    assert report.engine == ["backbone", "head"]
    assert not report.cached
    assert report.static
    assert len(list(cache.glob("dense-*.xml"))) == 1
    assert cache.stat().st_mode & 0o777 == 0o700
    report = cpu_engine.accelerate(second, "demo", sample, _options(cache))
    assert report.cached
    assert "from cache" in report.summary()
    images = [torch.rand(3, 480, 640)]
    with torch.inference_mode():
        a, b = first(images)[0], second(images)[0]
    assert torch.equal(a["boxes"], b["boxes"])
    assert torch.equal(a["scores"], b["scores"])


def test_a_warm_start_runs_nothing_eager(tmp_path: Path) -> None:
    """The first start checks the graphs against eager and records the verdict; a second
    start with the same weights, shape, precision and check pictures reads it and runs no
    eager pass (three of them made most of a warm start), yet answers the same."""
    sample = [torch.rand(3, 240, 320)]
    cache = tmp_path / "cache"
    first = _demo_module()
    cpu_engine.accelerate(first, "demo", sample, _options(cache, example=str(
        DEMO_MODEL_DIR / "example.jpg")))
    assert len(list(cache.glob("verdict-*.json"))) == 1
    second = _demo_module()
    eager_runs = []
    second.backbone.register_forward_hook(lambda *_: eager_runs.append(1))
    report = cpu_engine.accelerate(second, "demo", sample, _options(cache, example=str(
        DEMO_MODEL_DIR / "example.jpg")))
    assert report.engine == ["backbone", "head"], report.summary()
    assert report.cached
    assert eager_runs == []
    images = [torch.rand(3, 480, 640)]
    with torch.inference_mode():
        a, b = first(images)[0], second(images)[0]
    assert torch.equal(a["boxes"], b["boxes"])
    # Other check pictures: the verdict does not apply, the checks run again.
    third = _demo_module()
    third.backbone.register_forward_hook(lambda *_: eager_runs.append(1))
    cpu_engine.accelerate(third, "demo", sample, _options(cache))
    assert eager_runs


def test_a_cache_others_can_write_to_is_not_trusted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="predictor.pipeline.cpu_engine"):
        report = cpu_engine.accelerate(_demo_module(), "demo", [torch.rand(3, 96, 128)],
                                       _options(cache))
    assert report.engine == ["backbone", "head"]
    assert list(cache.iterdir()) == []
    assert any("not private" in r.getMessage() for r in caplog.records)


class _OddHead(nn.Module):
    """A head whose output is not made of tensors: it cannot be exported."""

    def forward(self, features: list[torch.Tensor]) -> dict[str, Any]:
        return {"mean": float(features[0].mean()), "map": features[0]}


class _TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = _OddHead()

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = self.head([self.backbone(torch.stack(images))])
        return [{"boxes": out["map"][:1, :4, 0, 0], "scores": torch.zeros(1),
                 "labels": torch.zeros(1, dtype=torch.int64)}]


def test_what_cannot_be_exported_stays_eager_with_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    model = _TinyDetector().eval()
    report = cpu_engine.accelerate(model, "tiny", [torch.rand(3, 16, 16)], _options(None))
    assert report.engine == []
    assert report.name == "torch"
    # The log line says what to do about it, not just what happened.
    assert "export failed" in report.summary()
    assert "--no_cpu_accel" in report.summary()
    assert isinstance(model.backbone, nn.Sequential)  # untouched: runs eager
    with torch.inference_mode():
        model([torch.rand(3, 16, 16)])


def test_torchscript_archives_run_as_they_are() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Identity()))
    report = cpu_engine.accelerate(scripted, "ts", [torch.rand(3, 8, 8)], _options(None))
    assert report.eager == {"model": "a TorchScript archive is run as it is"}


def test_precision_follows_what_the_cpu_has() -> None:
    fp32, bf16, fp16 = (precision.Precision.FP32, precision.Precision.BF16,
                        precision.Precision.FP16)
    assert precision.resolve("auto", [bf16, fp32])[0] is bf16
    assert precision.resolve("auto", [fp16, fp32])[0] is fp16
    assert precision.resolve("auto", [fp32]) == (fp32, "auto: this CPU has no native bf16 "
                                                       "or fp16")
    chosen, why = precision.resolve("bf16", [fp32])
    assert chosen is fp32
    assert "no native bf16" in why


def _same_boxes(want: torch.Tensor, got: torch.Tensor, tol: float = 1e-3) -> bool:
    """The same boxes, in any order: random weights give near-tied scores, whose order
    (and so the boxes' order) a last-bit difference may swap."""
    if want.shape != got.shape:
        return False
    if not want.numel():
        return True
    scale = max(1.0, float(want.abs().max()))
    far = torch.cdist(want, got, p=float("inf")) / scale
    return bool((far.min(dim=1).values <= tol).all() and (far.min(dim=0).values <= tol).all())


def _small_kwargs(arch: str) -> dict[str, Any]:
    if arch.startswith("ssd"):
        return {}  # fixed input sizes (300 and 320)
    kwargs: dict[str, Any] = {"min_size": 96, "max_size": 160}
    if "rcnn" in arch:
        kwargs.update(rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=10)
    return kwargs


# One of each kind of backbone and head in the default run (SSDlite is the demo, above);
# DETECTOR_ALL_ARCHS=1 runs all twelve (several minutes on 2 cores).
QUICK_ARCHS = {"fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn"}
ALL_ARCHS = sorted(torchvision.models.list_models(module=torchvision.models.detection))


def _expected_parts(model: nn.Module) -> list[str]:
    if hasattr(model, "head"):
        return ["backbone", "head"]
    return ["backbone", "rpn head", "box head"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_torchvision_detector_runs_on_the_engine(arch: str, tmp_path: Path) -> None:
    if arch not in QUICK_ARCHS and os.environ.get("DETECTOR_ALL_ARCHS") != "1":
        pytest.skip("set DETECTOR_ALL_ARCHS=1 to check every architecture "
                    "(several minutes on 2 cores)")
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                         num_classes=3, **_small_kwargs(arch)).eval()
    eager = copy.deepcopy(model)
    fuse_conv_bn(model)  # as the server does; BatchNorm layers it cannot fold stay
    report = cpu_engine.accelerate(model, arch, [torch.rand(3, 90, 120)],
                                   _options(tmp_path / "cache"))
    assert report.engine == _expected_parts(model), report.summary()
    assert report.static == arch.startswith("ssd")
    assert report.resize_first
    # More aspect ratios than static graphs: new ones run on the dynamic graph at once,
    # while the background compiles static graphs for the first ones.
    sizes = [(90, 120), (120, 90), (100, 100), (60, 160), (160, 60), (70, 150)]

    def same_answers() -> None:
        for h, w in sizes:
            images = [torch.rand(3, h, w)]
            with torch.inference_mode():
                want, got = eager(images), model(images)
            want = want[1] if isinstance(want, tuple) else want
            got = got[1] if isinstance(got, tuple) else got
            assert _same_boxes(want[0]["boxes"], got[0]["boxes"]), (h, w)

    same_answers()
    if not report.static:
        shapes = model.backbone.graphs
        assert isinstance(shapes, ov_shapes.Shapes)
        shapes.wait(timeout=300)
        assert len(shapes.static) == ov_shapes.MAX_SHAPES
        assert not shapes.refused
        same_answers()  # now partly on the static graphs


def _frozen_bn_detector() -> nn.Module:
    """A RetinaNet whose backbone has FrozenBatchNorm, as fine-tuning from torchvision's
    pretrained backbones gives (weights_backbone= cannot be downloaded here)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    return torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, norm_layer=FrozenBatchNorm2d)


@pytest.mark.parametrize("arch", [*ALL_ARCHS, "frozen-bn"])
def test_every_detector_can_be_cached(arch: str) -> None:
    """The cache key reads every buffer a trained model carries (BatchNorm's 0-dim
    num_batches_tracked, FrozenBatchNorm, GroupNorm) and changes when any of them does."""
    model = (_frozen_bn_detector() if arch == "frozen-bn" else torchvision.models.get_model(
        arch, weights=None, weights_backbone=None, num_classes=3))
    before = ov_graph.weights_digest(model)
    state = model.state_dict()  # shares storage with the model
    # A 0-dim buffer where the model has one (what broke the key), else its last tensor.
    name = next((n for n, t in state.items() if t.dim() == 0), list(state)[-1])
    with torch.no_grad():
        state[name].add_(1)
    assert ov_graph.weights_digest(model) != before, name


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(QUICK_ARCHS))
def test_a_served_detector_runs_on_the_engine_with_default_flags(
        arch: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The server's own path: a model folder, default flags (cache on, the architecture's
    own picture sizes, auto precision); nothing may fall back to eager, and a second start
    reads every graph from the cache."""
    from tests.support.servers import save_random_model

    folder = save_random_model(tmp_path / "model", arch)
    flags = {"model_dir": str(folder), "device": "cpu", "cache_dir": str(tmp_path / "cache")}
    engine = Engine(ModelConfig(**flags))
    engine.load()
    report = engine.cpu_report
    assert report.engine == _expected_parts(engine.loaded.module), report.summary()
    assert not report.eager, report.summary()
    assert engine.name == f"openvino-{report.precision}"
    again = Engine(ModelConfig(**flags))
    again.load()
    assert again.cpu_report.cached, again.engine_report
    picture = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    a, b = engine.run([picture])[0], again.run([picture])[0]
    # The same graphs (bf16 kernels may split work differently between runs: last bits).
    assert a.boxes.shape == b.boxes.shape
    assert np.allclose(a.boxes, b.boxes, atol=0.01)
