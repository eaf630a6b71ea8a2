"""Recall by object size at one score threshold, and the false detections beside it.

mAP is dominated by the sizes a data set holds most of, so a model that misses every
small object can still score well. This module counts, at the score a user actually
sees (the server's default ``score_threshold`` 0.5), which ground-truth boxes were found,
per size band, on two scales:

- **side**: the box's larger side once the picture is resized to ``view x view`` (as
  SSD and SSDlite stretch every picture to 320 x 320): small below 48 px, medium 48 to
  80 px, large 80 px and up. The demo's synthetic shapes start at 28 px, so its small
  band is 28-48 px.
- **area**: COCO's bands, by the box's area in the picture's own pixels: small below
  32², medium 32² to 96², large 96² and up.

Matching follows COCO's rule at IoU 0.5: detections of an image, best score first, each
take the unmatched ground-truth box of the same class that overlaps it most, if the IoU
is at least 0.5. A detection left unmatched is a false detection (a duplicate included).
Pure numpy: no server, no pycocotools.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = Sequence[float]

BAND_NAMES = ("small", "medium", "large")
SIDE_EDGES = (48.0, 80.0)
"""Larger side in a ``view`` px picture: small below 48, medium below 80, large above."""
AREA_EDGES = (32.0**2, 96.0**2)
"""COCO's area limits in the picture's own pixels."""
MATCH_IOU = 0.5
_LIMITS = {"side": ("<48 px", "48-80 px", ">=80 px"),
           "area": ("<32x32", "32x32-96x96", ">=96x96")}


@dataclass(frozen=True)
class BandRecall:
    """Found and total ground-truth boxes of one size band.

    Attributes:
        scale: ``"side"`` (larger side in the view) or ``"area"`` (COCO's areas).
        name: ``"small"``, ``"medium"`` or ``"large"``.
        limits: The band's limits as text, e.g. ``"48-80 px"``.
        found: Boxes matched by a detection at or above the score threshold.
        total: Ground-truth boxes in the band.
    """

    scale: str
    name: str
    limits: str
    found: int
    total: int

    @property
    def recall(self) -> float:
        """``found / total``; NaN for an empty band."""
        return self.found / self.total if self.total else float("nan")


@dataclass(frozen=True)
class SizeRecall:
    """Recall by size band and false detections, at one score threshold.

    Attributes:
        score_threshold: Detections scoring below it were not counted.
        view: Side of the square view the ``side`` bands are measured in.
        bands: Three ``side`` bands, then three ``area`` bands.
        false_detections: Detections at or above the threshold that matched nothing.
        num_images: Images counted.
    """

    score_threshold: float
    view: int
    bands: tuple[BandRecall, ...]
    false_detections: int
    num_images: int

    @property
    def false_per_image(self) -> float:
        """Mean false detections per picture."""
        return self.false_detections / self.num_images if self.num_images else 0.0

    def band(self, scale: str, name: str) -> BandRecall:
        """The band of that scale and name (KeyError when there is none)."""
        for b in self.bands:
            if (b.scale, b.name) == (scale, name):
                return b
        raise KeyError(f"no {scale} band {name!r}")

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready form (an empty band's recall is null)."""
        return {
            "score_threshold": self.score_threshold,
            "view": self.view,
            "false_detections": self.false_detections,
            "false_per_image": self.false_per_image,
            "bands": [{"scale": b.scale, "name": b.name, "limits": b.limits, "found": b.found,
                       "total": b.total, "recall": None if not b.total else b.recall}
                      for b in self.bands],
        }

    def format(self) -> str:
        """A readable table: one row per band, then the false detections."""
        titles = {"side": f"side in {self.view} px view", "area": "COCO area"}
        rows = [f"recall at score >= {self.score_threshold:g}, IoU {MATCH_IOU:g}",
                f"{'scale':<20}  {'band':<6}  {'limits':<13}  {'found':>9}  {'recall':>6}"]
        for b in self.bands:
            recall = f"{b.recall:6.3f}" if b.total else f"{'-':>6}"
            rows.append(f"{titles[b.scale]:<20}  {b.name:<6}  {b.limits:<13}  "
                        f"{f'{b.found}/{b.total}':>9}  {recall}")
        rows.append(f"false detections: {self.false_detections} "
                    f"({self.false_per_image:.3f} per image)")
        return "\n".join(rows)


def side_in_view(box: Box, width: float, height: float, view: int) -> float:
    """The box's larger side once its ``width x height`` picture is resized to ``view`` px."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return max((x2 - x1) * view / width, (y2 - y1) * view / height)


def box_area(box: Box) -> float:
    """Area in the picture's own pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def band_index(value: float, edges: Sequence[float]) -> int:
    """0, 1 or 2: the band ``value`` falls in (a value on an edge goes up)."""
    return sum(1 for edge in edges if value >= edge)


def box_iou(a: Sequence[Box] | np.ndarray, b: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``x1, y1, x2, y2`` boxes: a ``len(a) x len(b)`` float64 array.

    The project's one IoU for the client side and the tools (the demo script, the e2e
    tests). The runtime keeps its own in ``predictor/pipeline/precision.py``, since the
    runtime imports nothing of the client.
    """
    boxes_a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0))


def match_image(truth: Sequence[tuple[Box, int]], detections: Sequence[tuple[Box, float, int]],
                score_threshold: float) -> tuple[list[bool], int]:
    """Which ground-truth boxes a detection found, and how many detections found nothing."""
    found = [False] * len(truth)
    false = 0
    kept = sorted((d for d in detections if d[1] >= score_threshold), key=lambda d: -d[1])
    ious = box_iou([d[0] for d in kept], [t[0] for t in truth])
    for i, (_box, _score, label) in enumerate(kept):
        best, best_iou = -1, MATCH_IOU
        for k, (_gt_box, gt_label) in enumerate(truth):
            if found[k] or int(gt_label) != int(label):
                continue
            iou = float(ious[i, k])
            if iou >= best_iou:
                best, best_iou = k, iou
        if best < 0:
            false += 1
        else:
            found[best] = True
    return found, false


def recall_by_size(ground_truth: Sequence[Sequence[tuple[Box, int]]],
                   predictions: Sequence[Sequence[tuple[Box, float, int]]],
                   sizes: Sequence[tuple[float, float]], score_threshold: float = 0.5,
                   view: int = 320) -> SizeRecall:
    """Recall per size band and false detections, image by image (same order and length).

    Args:
        ground_truth: Per image, ``(box, label_id)`` pairs.
        predictions: Per image, ``(box, score, label_id)`` triples.
        sizes: Per image, ``(width, height)`` in pixels.
        score_threshold: Detections scoring below it are dropped before matching.
        view: Side of the square view the ``side`` bands are measured in.

    Raises:
        ValueError: The sequences differ in length, or a size is not positive.
    """
    if not len(ground_truth) == len(predictions) == len(sizes):
        raise ValueError(f"{len(ground_truth)} ground-truth images, {len(predictions)} "
                         f"prediction lists and {len(sizes)} sizes; they must pair up")
    found = {"side": [0, 0, 0], "area": [0, 0, 0]}
    total = {"side": [0, 0, 0], "area": [0, 0, 0]}
    false = 0
    for truth, dets, (width, height) in zip(ground_truth, predictions, sizes, strict=True):
        if not (width > 0 and height > 0 and math.isfinite(width * height)):
            raise ValueError(f"image size {width}x{height} is not positive")
        hits, misses = match_image(truth, dets, score_threshold)
        false += misses
        for (box, _label), hit in zip(truth, hits, strict=True):
            for scale, k in (("side", band_index(side_in_view(box, width, height, view),
                                                 SIDE_EDGES)),
                             ("area", band_index(box_area(box), AREA_EDGES))):
                total[scale][k] += 1
                found[scale][k] += int(hit)
    bands = tuple(BandRecall(scale, name, _LIMITS[scale][k], found[scale][k], total[scale][k])
                  for scale in ("side", "area") for k, name in enumerate(BAND_NAMES))
    return SizeRecall(score_threshold, view, bands, false, len(ground_truth))
