"""Drawing detections on images with PIL: boxes, labels and scores.

Colours are fixed per class name (a hash of the label picks one of twenty), so one class
has one colour across images and runs; label text sits on a filled box of that colour, in black or
white, whichever reads better on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, ImageFont

    from ._types import Detection

__all__ = ["PALETTE", "color_for", "draw_detections", "open_oriented", "text_color"]


# Twenty colours far apart from each other (after Kelly's list of colours of maximum
# contrast, without the greys that vanish on photos). A hash of the label picks one, so a
# class keeps its colour across images, runs and machines.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50),
    (194, 178, 128), (0, 180, 216), (0, 136, 86), (230, 143, 172), (0, 103, 165),
    (249, 147, 121), (96, 78, 151), (246, 166, 0), (179, 68, 108), (220, 211, 0),
    (136, 45, 23), (141, 182, 0), (101, 69, 34), (226, 88, 34), (216, 27, 158),
)


def color_for(label: str) -> tuple[int, int, int]:
    """The RGB colour of ``label``: fixed by a hash of the name (not Python's salted hash)."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background`` (WCAG luminance)."""
    def channel(value: int) -> float:
        c = value / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def open_oriented(path: Any) -> Image.Image:
    """Opens an image the way the server sees it: EXIF rotation applied, RGB."""
    from PIL import Image, ImageOps

    from ._images import rgb_pixels

    with Image.open(path) as img:
        img.load()
        oriented = ImageOps.exif_transpose(img) or img
        return Image.fromarray(rgb_pixels(oriented))


def draw_detections(
    image: Image.Image,
    detections: Iterable[Detection],
    *,
    line_width: int | None = None,
    font_size: int | None = None,
    show_scores: bool = True,
) -> Image.Image:
    """Returns a copy of ``image`` with each detection's box and label drawn on it.

    Args:
        image: The image the boxes refer to (see :func:`open_oriented` for files).
        detections: Detections with boxes in that image's pixels.
        line_width: Box outline width; scales with the image when None.
        font_size: Label text height in pixels; scales with the image when None.
        show_scores: Append the score to each label.
    """
    from PIL import Image, ImageDraw

    from ._images import rgb_pixels

    canvas = Image.fromarray(rgb_pixels(image))  # a copy: the caller's image is untouched
    shorter = min(canvas.size)
    width = line_width or max(1, round(shorter / 200))
    font = _font(font_size or max(10, round(shorter / 40)))
    draw = ImageDraw.Draw(canvas)
    for det in detections:
        color = color_for(det.label)
        x1, y1, x2, y2 = det.box
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=width)
        text = f"{det.label} {det.score:.2f}" if show_scores else det.label
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(1, width)
        box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
        # Above the box when it fits, else just inside its top edge.
        ty = y1 - box_h if y1 - box_h >= 0 else y1
        tx = min(max(0.0, x1), max(0.0, canvas.width - box_w))
        draw.rectangle([tx, ty, tx + box_w, ty + box_h], fill=color)
        draw.text((tx + pad - left, ty + pad - top), text, fill=text_color(color), font=font)
    return canvas


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType has only the fixed bitmap font
        return ImageFont.load_default()
