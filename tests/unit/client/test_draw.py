"""Drawing: fixed colours per class, boxes where the detections are, readable labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from client import Detection
from client.draw import color_for, draw_detections, open_oriented, text_color

ROOT = Path(__file__).resolve().parents[3]


def test_colours_are_fixed_per_label_across_processes() -> None:
    labels = ["circle", "square", "triangle", "star"]
    here = [color_for(label) for label in labels]
    code = f"from client.draw import color_for; print([color_for(x) for x in {labels!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env=env, cwd=ROOT).stdout.strip()
    assert there == str(here)
    assert len(set(here)) == len(labels)


def test_label_text_contrasts_with_its_background() -> None:
    assert text_color((255, 255, 0)) == (0, 0, 0)
    assert text_color((0, 0, 128)) == (255, 255, 255)


def test_boxes_and_filled_labels_are_drawn_on_a_copy() -> None:
    image = Image.new("RGB", (200, 160), (128, 128, 128))
    det = Detection(box=(40.0, 60.0, 150.0, 140.0), score=0.87, label="circle", label_id=1)
    drawn = np.asarray(draw_detections(image, [det], line_width=2, font_size=14))
    colour = np.array(color_for("circle"))
    assert np.asarray(image).max() == 128  # the caller's image is untouched
    # The box outline carries the class colour on all four sides.
    assert (drawn[100, 40] == colour).all()
    assert (drawn[100, 150] == colour).all()
    assert (drawn[140, 90] == colour).all()
    # Inside the box, the picture is unchanged.
    assert (drawn[100, 95] == 128).all()
    # The label sits above the box on a filled background, with text of another colour.
    label_area = drawn[47:58, 42:100].reshape(-1, 3)
    covered = (label_area != 128).any(axis=1).mean()
    filled = (label_area == colour).all(axis=1).mean()
    text = (label_area == np.array(text_color(tuple(colour)))).all(axis=1).sum()
    assert covered > 0.97  # no background shows through the label
    assert filled > 0.3
    assert text > 10


def test_label_moves_inside_a_box_touching_the_top_edge() -> None:
    image = Image.new("RGB", (120, 120), (0, 0, 0))
    det = Detection(box=(10.0, 0.0, 100.0, 100.0), score=0.5, label="star", label_id=4)
    drawn = np.asarray(draw_detections(image, [det], line_width=1, font_size=12))
    colour = np.array(color_for("star"))
    assert (drawn[5:12, 15:40].reshape(-1, 3) == colour).all(axis=1).mean() > 0.3


def test_open_oriented_applies_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (30, 10), (9, 9, 9)).save(path, exif=exif.tobytes())
    assert open_oriented(path).size == (10, 30)


def test_16_bit_pictures_are_drawn_as_they_look(tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((20, 30), 16384, dtype=np.uint16)).save(path)
    opened = open_oriented(path)
    assert opened.mode == "RGB"
    assert opened.getpixel((5, 5)) == (63, 63, 63)  # not clipped to white
    drawn = draw_detections(Image.open(path), [])
    assert drawn.getpixel((5, 5)) == (63, 63, 63)
