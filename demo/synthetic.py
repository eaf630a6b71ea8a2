"""Synthetic detection data: coloured shapes on cluttered backgrounds.

The embedded demo detector is trained on these pictures, and the held-out sets used to
evaluate it come from here too. Everything is drawn with PIL and numpy (no torch), so the
client-side evaluation and the tests can use it without the server's dependencies.

Every picture is a pure function of its seed: the same seed gives the same pixels, boxes
and labels on any machine.

Command line::

    python -m demo.synthetic --count 50 --seed 1234 --out /tmp/heldout --mixed-sizes 0.5

writes ``/tmp/heldout/images/000000.png ...`` and a COCO-style ``annotations.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")
"""Class names; class id ``i + 1`` names ``CLASSES[i]`` (id 0 is the background)."""

DEFAULT_SIZE = 320
MIN_OBJECT = 28
MAX_OBJECT = 120
SMALL_OBJECT = 48
"""Upper end of the small band (28-48 px in a 320 px view), where SSDlite's anchors thin out."""
# A new shape may hide at most this share of an earlier one (and be hidden by as much),
# so every object stays recognisable while overlaps still happen.
_MAX_HIDDEN = 0.2
_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Scene:
    """One rendered picture with its ground truth.

    Attributes:
        image: The RGB picture.
        boxes: ``N x 4`` float32 tight boxes ``[x1, y1, x2, y2]`` in pixels (x2/y2 exclusive).
        labels: ``N`` int64 class ids in ``1..len(CLASSES)``.
        masks: ``N x H x W`` bool, the full silhouette of each shape (before occlusion).
    """

    image: Image.Image
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def _rng(seed: int | np.random.Generator | Sequence[int]) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def random_size(rng: np.random.Generator, low: int = 256, high: int = 480) -> tuple[int, int]:
    """Draw a ``(width, height)`` with each side uniform in ``[low, high]``."""
    w, h = rng.integers(low, high + 1, size=2)
    return int(w), int(h)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A float32 ``H x W x 3`` background in 0..255: gradient, blobs, lines, noise."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    img = Image.fromarray(bg.astype(np.uint8))

    # Soft blobs: blurred hard enough that they never read as crisp circles.
    blobs = Image.new("RGB", (w, h))
    blob_mask = Image.new("L", (w, h))
    bd, md = ImageDraw.Draw(blobs), ImageDraw.Draw(blob_mask)
    for _ in range(int(rng.integers(0, 6))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(15, 80, size=2)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        bd.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
        md.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(60, 200)))
    radius = float(rng.uniform(8, 16))
    img = Image.composite(
        blobs.filter(ImageFilter.GaussianBlur(radius)),
        img,
        blob_mask.filter(ImageFilter.GaussianBlur(radius)),
    )

    # Thin straight lines and open polylines: edges that are not objects.
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 7))):
        npts = int(rng.integers(2, 4))
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(npts)]
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
    return np.asarray(img, dtype=np.float32)


def _polygon(label: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (``K x 2``) of a shape of nominal extent ``size`` centred on 0, rotated."""
    rot = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label - 1]
    if name == "square":
        half = size / 2 / math.sqrt(2) * 1.15
        ang = rot + np.arange(4) * math.pi / 2 + math.pi / 4
        radii = np.full(4, half * math.sqrt(2))
    elif name == "triangle":
        # Slightly irregular equilateral triangles: still unmistakably triangles.
        ang = rot + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.15, 0.15, size=3)
        radii = np.full(3, size / 2 * 1.1) * rng.uniform(0.9, 1.0, size=3)
    elif name == "star":
        inner = rng.uniform(0.38, 0.5)
        ang = rot + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner) * size / 2 * 1.1
    else:
        raise ValueError(f"no polygon for class {name!r}")
    return np.stack([radii * np.cos(ang), radii * np.sin(ang)], axis=1)


def _shape_mask(
    label: int, size: float, w: int, h: int, rng: np.random.Generator
) -> np.ndarray | None:
    """A bool ``H x W`` silhouette of one shape placed fully inside the picture."""
    if CLASSES[label - 1] == "circle":
        r = size / 2
        pts = np.array([[-r, -r], [r, r]])
    else:
        pts = _polygon(label, size, rng)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = hi - lo
    if span[0] + 2 > w or span[1] + 2 > h:
        return None
    offset = np.array(
        [rng.uniform(-lo[0] + 1, w - hi[0] - 1), rng.uniform(-lo[1] + 1, h - hi[1] - 1)]
    )
    pts = pts + offset
    mask = Image.new("L", (w, h))
    draw = ImageDraw.Draw(mask)
    if CLASSES[label - 1] == "circle":
        draw.ellipse(
            [float(pts[0, 0]), float(pts[0, 1]), float(pts[1, 0]), float(pts[1, 1])], fill=255
        )
    else:
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=255)
    out = np.asarray(mask) > 0
    return out if out.any() else None


def _contrasting_colour(
    rng: np.random.Generator, under: np.ndarray, min_distance: float = 90.0
) -> np.ndarray:
    """A colour far enough from the mean colour of the pixels it will cover."""
    mean = under.reshape(-1, 3).mean(axis=0)
    best, best_d = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        d = float(np.linalg.norm(colour - mean))
        if d >= min_distance:
            return colour
        if d > best_d:
            best, best_d = colour, d
    assert best is not None
    return best


def make_scene(
    seed: int | np.random.Generator | Sequence[int],
    size: int | tuple[int, int] = DEFAULT_SIZE,
    min_objects: int = 1,
    max_objects: int = 4,
    small_share: float = 0.0,
) -> Scene:
    """Render one picture and its exact ground truth (see :class:`Scene`).

    Args:
        seed: An int, a seed sequence, or a numpy Generator (consumed).
        size: Side of a square picture, or ``(width, height)``.
        min_objects: Fewest shapes drawn.
        max_objects: Most shapes drawn.
        small_share: Chance that a shape's extent is drawn from the small band
            ``[28, 48]`` instead of ``[28, 120]`` (training more on small shapes). At 0 the
            random stream, and so every picture of a seed, is the same as without it.

    Object extents are drawn in ``[28, 120]`` pixels, scaled by the picture's geometric
    mean side over 320 so that shapes keep their size once a 320 px model resizes it.
    """
    rng = _rng(seed)
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    scale = math.sqrt(w * h) / DEFAULT_SIZE
    img = _background(rng, w, h)

    wanted = int(rng.integers(min_objects, max_objects + 1))
    masks: list[np.ndarray] = []
    labels: list[int] = []
    visible = np.zeros((h, w), dtype=np.int32) - 1  # index of the shape on top, -1 none
    for _ in range(wanted):
        label = int(rng.integers(1, len(CLASSES) + 1))
        for _try in range(_PLACEMENT_TRIES):
            high = MAX_OBJECT
            if small_share > 0 and rng.uniform() < small_share:
                high = SMALL_OBJECT
            extent = rng.uniform(MIN_OBJECT, high) * scale
            mask = _shape_mask(label, extent, w, h, rng)
            if mask is None:
                continue
            area = mask.sum()
            if any((mask & m).sum() > _MAX_HIDDEN * min(area, m.sum()) for m in masks):
                continue
            break
        else:
            continue
        colour = _contrasting_colour(rng, img[mask])
        # A little shading across the shape, so flat fills are not the only cue.
        shade = rng.uniform(0.85, 1.15) + rng.normal(0, 6, size=3) / 255
        img[mask] = np.clip(colour * shade, 0, 255)
        visible[mask] = len(masks)
        masks.append(mask)
        labels.append(label)

    # Lighting: a smooth gain across the picture plus a global offset.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.25, 0.25, size=2)
    gain = 1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    img = img * rng.uniform(0.75, 1.2) * gain[..., None] + rng.uniform(-25, 25)
    img = img + rng.normal(0, rng.uniform(0, 12), size=img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    blur = float(rng.uniform(0, 1.0))
    if blur > 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))

    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    stacked = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return Scene(pil, boxes, np.asarray(labels, dtype=np.int64), stacked)


def make_sample(
    seed: int | np.random.Generator | Sequence[int],
    size: int | tuple[int, int] = DEFAULT_SIZE,
    min_objects: int = 1,
    max_objects: int = 4,
    small_share: float = 0.0,
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Render one picture: ``(image, boxes N x 4 float32 xyxy, labels N int64)``.

    Same arguments as :func:`make_scene`.
    """
    scene = make_scene(seed, size, min_objects, max_objects, small_share)
    return scene.image, scene.boxes, scene.labels


def sample_size(rng: np.random.Generator, mixed_fraction: float) -> tuple[int, int]:
    """320 x 320, or with probability ``mixed_fraction`` a random size in 256..480."""
    if rng.uniform() < mixed_fraction:
        return random_size(rng)
    return DEFAULT_SIZE, DEFAULT_SIZE


def write_dataset(
    out: Path, count: int, seed: int, mixed_fraction: float = 0.0, progress: bool = True
) -> Path:
    """Write ``count`` pictures and a COCO ``annotations.json`` under ``out``.

    Picture ``i`` depends only on ``(seed, i)``. Returns the annotations path.
    """
    from tqdm import tqdm

    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for i in tqdm(range(count), desc="synthetic", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, i])
        image, boxes, labels = make_sample(rng, sample_size(rng, mixed_fraction))
        name = f"{i:06d}.png"
        image.save(images_dir / name)
        images.append({"id": i, "file_name": name, "width": image.width, "height": image.height})
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    path = out / "annotations.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: write a synthetic COCO-style data set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, required=True, help="number of pictures")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--mixed-sizes",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of pictures with random sides in 256..480 px",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    if not 0.0 <= args.mixed_sizes <= 1.0:
        parser.error("--mixed-sizes must be between 0 and 1")
    path = write_dataset(
        args.out, args.count, args.seed, args.mixed_sizes, progress=not args.no_progress
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
