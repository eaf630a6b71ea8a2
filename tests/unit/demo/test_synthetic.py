"""Synthetic shapes: reproducible pictures with exact boxes, and the COCO writer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo import synthetic
from demo.synthetic import CLASSES, make_sample, make_scene


def test_same_seed_same_picture_and_boxes():
    a_img, a_boxes, a_labels = make_sample(123)
    b_img, b_boxes, b_labels = make_sample(np.random.default_rng(123))
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    assert np.array_equal(a_boxes, b_boxes)
    assert np.array_equal(a_labels, b_labels)


def test_different_seeds_differ():
    a, _, _ = make_sample(1)
    b, _, _ = make_sample(2)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("size", [320, (256, 480), (480, 300)])
def test_sample_types_and_size(size):
    image, boxes, labels = make_sample(7, size)
    w, h = (size, size) if isinstance(size, int) else size
    assert image.mode == "RGB"
    assert image.size == (w, h)
    assert boxes.dtype == np.float32
    assert boxes.shape == (len(labels), 4)
    assert labels.dtype == np.int64
    assert 1 <= len(labels) <= 4
    assert set(labels.tolist()) <= set(range(1, len(CLASSES) + 1))


def test_boxes_are_tight_and_inside_the_picture():
    for seed in range(40):
        size = (256 + 7 * seed, 480 - 5 * seed)
        scene = make_scene(seed, size)
        w, h = size
        for box, mask in zip(scene.boxes, scene.masks, strict=True):
            x1, y1, x2, y2 = box.astype(int)
            assert 0 <= x1 < x2 <= w
            assert 0 <= y1 < y2 <= h
            # Tight: the shape touches all four edges of its box and nothing lies outside.
            assert mask[y1:y2, x1:x2].sum() == mask.sum()
            assert mask[y1, x1:x2].any()
            assert mask[y2 - 1, x1:x2].any()
            assert mask[y1:y2, x1].any()
            assert mask[y1:y2, x2 - 1].any()


def test_objects_are_sized_and_all_classes_appear():
    seen: set[int] = set()
    for seed in range(60):
        _, boxes, labels = make_sample(seed)
        seen.update(labels.tolist())
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (sides >= 18).all()
        assert (sides <= 140).all()
    assert seen == {1, 2, 3, 4}


def test_small_share_draws_more_small_shapes_and_zero_changes_nothing():
    def sides(small_share: float) -> np.ndarray:
        out = []
        for seed in range(40):
            _, boxes, _ = make_sample(seed, small_share=small_share)
            out.append(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        return np.concatenate(out)

    plain, same = make_sample(7), make_sample(7, small_share=0.0)
    assert np.array_equal(np.asarray(plain[0]), np.asarray(same[0]))  # held-out sets keep
    assert np.array_equal(plain[1], same[1])  # their pixels and boxes
    small = np.mean(sides(0.0) < 48), np.mean(sides(0.6) < 48)
    assert small[1] > small[0] + 0.25, small


def test_shapes_stay_mostly_visible():
    for seed in range(40):
        scene = make_scene(seed)
        for i, mask in enumerate(scene.masks):
            hidden = sum((mask & later).sum() for later in scene.masks[i + 1 :])
            assert hidden <= 0.45 * mask.sum()


def test_write_dataset_coco_structure(tmp_path: Path):
    path = synthetic.write_dataset(tmp_path, count=6, seed=5, mixed_fraction=1.0, progress=False)
    coco = json.loads(path.read_text(encoding="utf-8"))
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == list(CLASSES)
    assert [im["id"] for im in coco["images"]] == list(range(6))
    ids = {im["id"]: im for im in coco["images"]}
    for im in coco["images"]:
        with Image.open(tmp_path / "images" / im["file_name"]) as pic:
            assert pic.size == (im["width"], im["height"])
    assert any(im["width"] != im["height"] for im in coco["images"])
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        im = ids[ann["image_id"]]
        assert w > 0
        assert h > 0
        assert x >= 0
        assert y >= 0
        assert x + w <= im["width"]
        assert y + h <= im["height"]
        assert ann["category_id"] in {1, 2, 3, 4}
    # Picture i depends only on (seed, i): rewriting gives identical files.
    again = synthetic.write_dataset(
        tmp_path / "again", count=6, seed=5, mixed_fraction=1.0, progress=False
    )
    assert json.loads(again.read_text(encoding="utf-8")) == coco


def test_cli_writes_count_images(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["synthetic"])
    assert (
        synthetic.main(["--count", "3", "--seed", "1", "--out", str(tmp_path), "--no-progress"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    assert (tmp_path / "annotations.json").exists()
    assert str(tmp_path / "annotations.json") in capsys.readouterr().out


def test_cli_rejects_bad_fraction(tmp_path: Path):
    with pytest.raises(SystemExit):
        synthetic.main(["--count", "1", "--out", str(tmp_path), "--mixed-sizes", "2"])
