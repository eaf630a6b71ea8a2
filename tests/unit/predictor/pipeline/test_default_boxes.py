"""config.json's "anchors": an SSD model's default boxes, as the server rebuilds them."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from predictor.config import ModelConfig
from predictor.pipeline.default_boxes import AnchorError, apply_anchors
from predictor.pipeline.loader import LoadError, load_model, save_model_folder
from tests.support.servers import TEST_ARCH, TEST_LABELS

# ssdlite320's six feature maps at a 320 x 320 input.
GRIDS = (20, 10, 5, 3, 2, 1)


@functools.cache
def _built() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(TEST_ARCH, weights=None, weights_backbone=None,
                                        num_classes=len(TEST_LABELS))


def ssdlite() -> torch.nn.Module:
    """A fresh copy of one random-weights ssdlite320 (building one is the slow part)."""
    return copy.deepcopy(_built())


def smallest_square_box(model: torch.nn.Module) -> float:
    """The smallest larger side of all default boxes of a 320 px picture, in pixels."""
    images = ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)])
    features = [torch.zeros(1, 1, g, g) for g in GRIDS]
    boxes = model.anchor_generator(images, features)[0]
    sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return float(sides.min())


def test_the_builders_smallest_box_is_64_px_and_min_ratio_moves_it():
    model = ssdlite()
    assert smallest_square_box(model) == pytest.approx(64.0, abs=0.01)
    apply_anchors(model, {"min_ratio": 0.1})
    assert smallest_square_box(model) == pytest.approx(32.0, abs=0.01)
    # max_ratio stays the builder's 0.95, so the largest boxes do not move.
    assert model.anchor_generator.scales[-2:] == pytest.approx([0.95, 1.0])


def test_explicit_scales_and_same_count_aspect_ratios():
    model = ssdlite()
    scales = [0.12, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0]
    apply_anchors(model, {"scales": scales, "aspect_ratios": [[2, 4]] * 6})
    assert model.anchor_generator.scales == scales
    assert model.anchor_generator.num_anchors_per_location() == [6] * 6


@pytest.mark.parametrize(("spec", "message"), [
    ({"min_size": 0.1}, r"unknown keys \['min_size'\]; allowed: min_ratio, max_ratio"),
    ({"min_ratio": 0.5, "max_ratio": 0.4}, "need 0 < min_ratio < max_ratio <= 1"),
    ({"min_ratio": 0}, "need 0 < min_ratio"),
    ({"min_ratio": "0.1"}, "need 0 < min_ratio"),
    ({"scales": [0.1, 0.2]}, r"\"scales\" must be 7 numbers in \(0, 1\]"),
    ({"scales": [0.1] * 7, "min_ratio": 0.1}, "not both"),
    ({"aspect_ratios": [[2]] * 6}, r"gives \[4, 4, 4, 4, 4, 4\] boxes per location; the "
                                   r"model's head has \[6, 6, 6, 6, 6, 6\]"),
    ({"aspect_ratios": [[2, 3]] * 5}, "must be 6 lists"),
    ({}, "must be an object"),
    ([0.1], "must be an object"),
])
def test_bad_settings_say_what_is_wrong(spec: Any, message: str):
    model = ssdlite()
    before = model.anchor_generator
    with pytest.raises(AnchorError, match=message):
        apply_anchors(model, spec)
    assert model.anchor_generator is before


def test_models_without_default_boxes_are_refused():
    model = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                         weights_backbone=None, num_classes=3)
    with pytest.raises(AnchorError, match="applies to SSD and SSDlite models.*AnchorGenerator"):
        apply_anchors(model, {"min_ratio": 0.1})


def test_the_writer_and_the_loader_carry_the_anchors(tmp_path: Path):
    model = ssdlite()
    save_model_folder(tmp_path, model.state_dict(), TEST_ARCH, TEST_LABELS,
                      anchors={"min_ratio": 0.1, "max_ratio": 0.95})
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["anchors"] == {"min_ratio": 0.1, "max_ratio": 0.95}
    loaded = load_model(ModelConfig(model_dir=str(tmp_path), device="cpu"))
    assert smallest_square_box(loaded.module) == pytest.approx(32.0, abs=0.01)
    # Same weights, same head: only the boxes the head's outputs are decoded against moved.
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], value), name


def test_a_bad_setting_stops_the_load_naming_config_json(tmp_path: Path):
    save_model_folder(tmp_path, ssdlite().state_dict(), TEST_ARCH, TEST_LABELS,
                      anchors={"min_ratio": 1.5})
    with pytest.raises(LoadError, match=r"config.json: need 0 < min_ratio < max_ratio <= 1"):
        load_model(ModelConfig(model_dir=str(tmp_path), device="cpu"))
