"""Draft decoding: a JPEG the model shrinks anyway decodes smaller, boxes stay in its pixels."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from client.evaluate import evaluate_detections
from demo.synthetic import make_sample
from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline.decode import ImageLimits, Scaled, decode_for_model
from predictor.pipeline.engine import Engine

LIMITS = ImageLimits()


def _jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def _fixed(_w: int, _h: int) -> tuple[int, int]:
    return 320, 320


def test_a_large_jpeg_decodes_at_a_reduced_scale_never_below_the_target() -> None:
    got = decode_for_model(_jpeg(4000, 3000), LIMITS, _fixed)
    assert isinstance(got, Scaled)
    assert got.size == (3000, 4000)
    assert got.pixels.shape == (375, 500, 3)  # 1/8: both sides still >= 320


def test_exif_orientation_is_applied_to_pixels_and_size() -> None:
    got = decode_for_model(_jpeg(1280, 960, orientation=6), LIMITS, _fixed)
    assert isinstance(got, Scaled)
    assert got.size == (1280, 960)  # upright: taller than wide
    assert got.pixels.shape == (640, 480, 3)


@pytest.mark.parametrize("size", [(640, 480), (600, 600)])
def test_a_jpeg_near_the_target_decodes_at_full_size(size: tuple[int, int]) -> None:
    got = decode_for_model(_jpeg(*size), LIMITS, _fixed)
    assert isinstance(got, np.ndarray)
    assert got.shape == (size[1], size[0], 3)


def test_other_formats_and_no_target_decode_at_full_size() -> None:
    out = io.BytesIO()
    Image.new("RGB", (2000, 1500)).save(out, "PNG")
    assert decode_for_model(out.getvalue(), LIMITS, _fixed).shape == (1500, 2000, 3)
    assert decode_for_model(_jpeg(2000, 1500), LIMITS, None).shape == (1500, 2000, 3)


def test_demo_detections_from_draft_decoding_match_full_decoding() -> None:
    engine = Engine(ModelConfig(model_dir=str(DEMO_MODEL_DIR), device="cpu", cache_dir=""))
    engine.load()
    target = engine.shrink_target()
    assert target is not None
    truth: list[list[tuple[Any, int]]] = []
    full: list[list[tuple[Any, float, int]]] = []
    draft: list[list[tuple[Any, float, int]]] = []
    for i in range(24):
        image, boxes, labels = make_sample(np.random.default_rng([987_654, i]), (320, 320))
        big = image.resize((1280, 1280), Image.BILINEAR)  # a camera-sized picture
        out = io.BytesIO()
        big.save(out, "JPEG", quality=92)
        truth.append([((b * 4).tolist(), int(k)) for b, k in zip(boxes, labels, strict=True)])
        scaled = decode_for_model(out.getvalue(), LIMITS, target)
        assert isinstance(scaled, Scaled)
        plain = decode_for_model(out.getvalue(), LIMITS, None)
        for dest, img in ((draft, scaled), (full, plain)):
            det = engine.run([img])[0]
            dest.append([(det.boxes[j].tolist(), float(det.scores[j]), int(det.labels[j]))
                         for j in range(len(det.scores))])
    names = {i: f"class_{i}" for i in range(1, 5)}
    map_full = evaluate_detections(truth, full, names).map50
    map_draft = evaluate_detections(truth, draft, names).map50
    assert map_full >= 0.85  # boxes really are in the 1280 px picture's pixels
    assert map_draft >= map_full - 0.01
