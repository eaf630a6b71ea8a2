"""cpu_engine: the fused CPU path gives the eager model's detections, or stays eager, saying why."""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
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
from predictor.pipeline import cpu_engine
from predictor.pipeline.bn_fold import fuse_conv_bn
from predictor.pipeline.detections import RawDetections
from predictor.pipeline.engine import Engine

HELD_OUT_SEED = 987_654  # the demo's held-out pictures (never trained on)
MIN_SCORE = 0.05  # the model's own cut
MARGIN = 0.02  # a detection this close to the cut may fall on either side of it


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], Any, Any]:
    folder = tmp_path_factory.mktemp("held-out")
    annotations = write_dataset(folder, count=50, seed=HELD_OUT_SEED, mixed_fraction=0.5,
                                progress=False)
    paths, truth, names = load_coco(folder / "images", annotations)
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return pictures, truth, names


def _engine(tmp_path: Path, accel: bool) -> Engine:
    engine = Engine(ModelConfig(model_dir=str(DEMO_MODEL_DIR), device="cpu", cpu_accel=accel,
                                cache_dir=str(tmp_path / "cache")))
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


def test_demo_detections_and_map_match_eager_on_held_out_pictures(
        held_out: tuple[list[np.ndarray], Any, Any], tmp_path: Path) -> None:
    pictures, truth, names = held_out
    eager = _engine(tmp_path, accel=False)
    fast = _engine(tmp_path, accel=True)
    module = fast.loaded.module if fast.loaded else None
    # The fast path really is in use, so this test cannot pass by comparing eager to eager.
    assert isinstance(getattr(module, "backbone", None), cpu_engine.PerImage)
    assert isinstance(getattr(module, "head", None), cpu_engine.PerImage)
    want, got = _detect(eager, pictures), _detect(fast, pictures)
    problems = [f"picture {k}: {p}" for k, (a, b) in enumerate(zip(want, got, strict=True))
                for p in _unmatched(a, b) + _unmatched(b, a)]
    assert not problems, "\n".join(problems[:20])
    assert sum(len(d.scores) for d in want) > 100  # the pictures do have detections

    def as_predictions(dets: list[RawDetections]) -> list[list[tuple[Any, float, int]]]:
        return [[(d.boxes[i].tolist(), float(d.scores[i]), int(d.labels[i]))
                 for i in range(len(d.scores))] for d in dets]

    map_eager = evaluate_detections(truth, as_predictions(want), names).map50
    map_fast = evaluate_detections(truth, as_predictions(got), names).map50
    assert map_eager >= 0.9
    assert map_fast == pytest.approx(map_eager, abs=0.002)


def test_engine_logs_what_the_cpu_path_did(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="predictor.pipeline.engine"):
        _engine(tmp_path, accel=True)
    assert any("CPU path: oneDNN-fused backbone, head; resize before normalise" in r.getMessage()
               for r in caplog.records)


def _demo_module() -> nn.Module:
    from predictor.pipeline.loader import load_model

    module = load_model(ModelConfig(model_dir=str(DEMO_MODEL_DIR))).module.eval()
    fuse_conv_bn(module)
    return module


def test_cache_is_reused_across_starts(tmp_path: Path) -> None:
    sample = [torch.rand(3, 240, 320)]
    first, second = _demo_module(), _demo_module()
    cache = tmp_path / "cache"
    report = cpu_engine.accelerate(first, "demo", sample, str(cache))
    assert report.fused == ["backbone", "head"]
    assert report.cached == []
    assert len(list(cache.glob("*.pt"))) == 2
    assert cache.stat().st_mode & 0o777 == 0o700
    report = cpu_engine.accelerate(second, "demo", sample, str(cache))
    assert report.cached == ["backbone", "head"]
    assert "(cached)" in report.summary()
    images = [torch.rand(3, 480, 640)]
    with torch.inference_mode():
        a, b = first(images)[0], second(images)[0]
    assert torch.equal(a["boxes"], b["boxes"])
    assert torch.equal(a["scores"], b["scores"])


def test_a_cache_others_can_write_to_is_not_trusted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="predictor.pipeline.cpu_engine"):
        report = cpu_engine.accelerate(_demo_module(), "demo", [torch.rand(3, 96, 128)], str(cache))
    assert report.fused == ["backbone", "head"]
    assert list(cache.iterdir()) == []
    assert any("not private" in r.getMessage() for r in caplog.records)


class _OddHead(nn.Module):
    """A head whose output is not made of tensors: it cannot be traced."""

    def forward(self, features: list[torch.Tensor]) -> dict[str, Any]:
        return {"mean": float(features[0].mean()), "map": features[0]}


class _TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = _OddHead()

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        features = self.backbone(torch.stack(images))
        out = self.head([features])
        return [{"boxes": torch.zeros(1, 4) + out["mean"], "scores": m.amax().reshape(1),
                 "labels": torch.ones(1, dtype=torch.int64)} for m in out["map"]]


def test_a_part_that_cannot_be_traced_stays_eager_with_the_reason() -> None:
    torch.manual_seed(0)
    model = _TinyDetector().eval()
    reference = copy.deepcopy(model)
    report = cpu_engine.accelerate(model, "tiny", [torch.rand(3, 16, 16)], None)
    assert report.fused == ["backbone"]
    assert set(report.eager) == {"head"}
    assert "head eager:" in report.summary()
    images = [torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    with torch.inference_mode():
        for a, b in zip(reference(images), model(images), strict=True):
            assert torch.allclose(a["scores"], b["scores"], atol=1e-5)


def test_a_torchscript_model_is_left_alone() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 3, 1)))
    report = cpu_engine.accelerate(scripted, "ts", [torch.rand(3, 8, 8)], None)
    assert report.fused == []
    assert "model" in report.eager


def test_each_new_shape_is_checked_and_shapes_past_the_limit_run_eager() -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None,
        num_classes=3, min_size=64, max_size=256).eval()
    fuse_conv_bn(model)
    report = cpu_engine.accelerate(model, "frcnn", [torch.rand(3, 64, 64)], None)
    assert report.fused == ["backbone"]
    part = model.backbone
    assert isinstance(part, cpu_engine.PerImage)
    sizes = [(64, 64), (64, 96), (64, 128), (64, 160), (64, 192), (64, 224)]
    with torch.inference_mode():
        for height, width in sizes + sizes[:2]:
            x = torch.rand(2, 3, height, width)
            assert cpu_engine._max_error(part.eager(x), part(x)) <= cpu_engine.TOLERANCE
    assert len(part._traced_shapes) == cpu_engine.MAX_SHAPES
    assert len(part._eager_shapes) == len(sizes) - cpu_engine.MAX_SHAPES


def test_outputs_are_joined_back_into_a_batch() -> None:
    a = {"x": torch.ones(1, 2), "y": [torch.zeros(1, 3)]}
    b = {"x": torch.full((1, 2), 2.0), "y": [torch.ones(1, 3)]}
    joined = cpu_engine._concat([a, b])
    assert isinstance(joined, OrderedDict)
    assert joined["x"].tolist() == [[1.0, 1.0], [2.0, 2.0]]
    assert joined["y"][0].shape == (2, 3)
    with pytest.raises(TypeError, match="cannot join"):
        cpu_engine._concat([object(), object()])


def _small_kwargs(arch: str) -> dict[str, Any]:
    """Small pictures and few proposals: the same layers, a fraction of the work."""
    if arch.startswith("ssd"):
        return {}  # fixed input sizes (300 and 320)
    kwargs: dict[str, Any] = {"min_size": 96, "max_size": 160}
    if "rcnn" in arch:
        kwargs.update(rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=10)
    return kwargs


# One of each kind of backbone and head in the default run (SSDlite is the demo, above);
# DETECTOR_ALL_ARCHS=1 runs all twelve (one to four minutes on 2 cores).
QUICK_ARCHS = {"fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn",
               "keypointrcnn_resnet50_fpn"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(
    torchvision.models.list_models(module=torchvision.models.detection)))
def test_every_torchvision_detector_takes_the_fused_path(arch: str) -> None:
    if arch not in QUICK_ARCHS and os.environ.get("DETECTOR_ALL_ARCHS") != "1":
        pytest.skip("set DETECTOR_ALL_ARCHS=1 to check every architecture "
                    "(one to four minutes on 2 cores)")
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                         num_classes=3, **_small_kwargs(arch)).eval()
    fuse_conv_bn(model)
    report = cpu_engine.accelerate(model, arch, [torch.rand(3, 90, 120)], None)
    expected = ["backbone", "head"] if hasattr(model, "head") else ["backbone"]
    assert report.fused == expected, report.summary()
    assert report.resize_first
    assert report.eager == {}
    # Another aspect ratio: a new shape, checked against eager on its first image.
    images = [torch.rand(3, 120, 90), torch.rand(3, 90, 120)]
    with torch.inference_mode():
        model_input, _ = model.transform(images)
        part = model.backbone
        assert isinstance(part, cpu_engine.PerImage)
        features = part(model_input.tensors)
        assert cpu_engine._max_error(part.eager(model_input.tensors), features) <= 1e-3
        if "head" in expected:
            head = model.head
            assert isinstance(head, cpu_engine.PerImage)
            maps = list(features.values())
            assert cpu_engine._max_error(head.eager(maps), head(maps)) <= 1e-3
        out = model(images)
    detections = out[1] if isinstance(out, tuple) else out
    assert [set(d) >= {"boxes", "scores", "labels"} for d in detections] == [True, True]
