"""Detection accuracy: COCO-style mAP@0.5 and mAP@0.5:0.95 from a labelled image folder.

The metric follows the COCO definition: for each class and IoU threshold, detections of
all images are ranked by score, each one matched greedily to the unmatched ground-truth
box of the same class it overlaps most (IoU at or above the threshold), and the area under
the interpolated precision/recall curve is sampled at 101 recall points. mAP averages over
the classes that have ground truth; mAP@0.5:0.95 also averages over IoU 0.50, 0.55 ... 0.95.
As in COCO, at most ``max_detections`` (100) highest-scoring detections per image and
class count.

Ground truth comes from a folder of images and a COCO ``annotations.json`` (``bbox`` is
``[x, y, w, h]`` in pixels); predictions come from any ``detect_fn`` (for example one that
calls the server), so this module needs only numpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Box = Sequence[float]
"""``[x1, y1, x2, y2]`` in pixels."""
GroundTruth = Sequence[Sequence[tuple[Box, int]]]
"""Per image: ``(box, label_id)`` pairs."""
Predictions = Sequence[Sequence[tuple[Box, float, int]]]
"""Per image: ``(box, score, label_id)`` triples."""
DetectFn = Callable[[list[Path]], Predictions]

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ClassResult:
    """Accuracy for one class.

    Attributes:
        label_id: Class id.
        name: Class name.
        ap50: Average precision at IoU 0.5.
        ap: Average precision averaged over IoU 0.50:0.95.
        recall50: Share of ground-truth boxes found at IoU 0.5 (any score).
        num_ground_truth: Ground-truth boxes of this class.
        num_detections: Detections of this class that were counted.
    """

    label_id: int
    name: str
    ap50: float
    ap: float
    recall50: float
    num_ground_truth: int
    num_detections: int


@dataclass(frozen=True)
class Report:
    """Result of an evaluation: per-class figures and their means.

    Attributes:
        classes: One entry per class with ground truth, by label id.
        map50: Mean AP@0.5 over those classes.
        map: Mean AP@0.5:0.95 over those classes.
        num_images: Images evaluated.
        ignored_labels: Label ids predicted that have no ground truth anywhere.
    """

    classes: tuple[ClassResult, ...]
    map50: float
    map: float
    num_images: int
    ignored_labels: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "num_images": self.num_images,
            "map50": self.map50,
            "map50_95": self.map,
            "classes": [
                {
                    "label_id": c.label_id,
                    "name": c.name,
                    "ap50": c.ap50,
                    "ap50_95": c.ap,
                    "recall50": c.recall50,
                    "num_ground_truth": c.num_ground_truth,
                    "num_detections": c.num_detections,
                }
                for c in self.classes
            ],
            "ignored_labels": list(self.ignored_labels),
        }

    def format(self) -> str:
        """A readable table, one row per class and a mean row."""
        width = max([len("class"), len("mean"), *(len(c.name) for c in self.classes)])
        head = (
            f"{'class':<{width}}  {'AP@.5':>6}  {'AP@.5:.95':>9}  {'R@.5':>6}  "
            f"{'GT':>5}  {'det':>5}"
        )
        rows = [head, "-" * len(head)]
        for c in self.classes:
            rows.append(
                f"{c.name:<{width}}  {c.ap50:6.3f}  {c.ap:9.3f}  {c.recall50:6.3f}  "
                f"{c.num_ground_truth:5d}  {c.num_detections:5d}"
            )
        rows.append("-" * len(head))
        gt = sum(c.num_ground_truth for c in self.classes)
        det = sum(c.num_detections for c in self.classes)
        rows.append(
            f"{'mean':<{width}}  {self.map50:6.3f}  {self.map:9.3f}  {'':>6}  {gt:5d}  {det:5d}"
        )
        rows.append(f"{self.num_images} images")
        return "\n".join(rows)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``N x 4`` and ``M x 4`` xyxy boxes -> ``N x M``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(tp: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP of detections already ranked by score.

    Args:
        tp: Bool per ranked detection, True where it matched a ground-truth box.
        num_gt: Ground-truth boxes of the class.
    """
    if num_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    tps = np.cumsum(tp, dtype=np.float64)
    fps = np.cumsum(~tp, dtype=np.float64)
    recall = tps / num_gt
    precision = tps / (tps + fps)
    # The envelope: precision at recall r is the best precision at any recall >= r.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    sampled = np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0)
    return float(sampled.mean())


def _match(det_boxes: np.ndarray, gt_boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy COCO matching within one image; detections must be in score order."""
    tp = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in range(len(det_boxes)):
        row = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(row))
        if row[g] >= threshold:
            taken[g] = True
            tp[d] = True
    return tp


def evaluate_detections(
    ground_truth: GroundTruth,
    predictions: Predictions,
    class_names: Mapping[int, str] | None = None,
    max_detections: int = 100,
) -> Report:
    """Score predictions against ground truth, image by image (same order, same length).

    Args:
        ground_truth: Per image, ``(box, label_id)`` pairs.
        predictions: Per image, ``(box, score, label_id)`` triples.
        class_names: Names for label ids (default: the id as text).
        max_detections: Highest-scoring detections counted per image and class.

    Raises:
        ValueError: The two sequences differ in length.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(
            f"{len(ground_truth)} ground-truth images but "
            f"{len(predictions)} prediction lists; they must pair up"
        )
    names = dict(class_names or {})
    gt_labels = sorted({int(lab) for image in ground_truth for _, lab in image})
    pred_labels = {int(lab) for image in predictions for _, _, lab in image}

    per_class: list[ClassResult] = []
    for label in gt_labels:
        scores: list[float] = []
        hits: dict[float, list[bool]] = {t: [] for t in IOU_THRESHOLDS}
        num_gt = 0
        for gts, preds in zip(ground_truth, predictions, strict=True):
            gt_boxes = np.array(
                [b for b, lab in gts if int(lab) == label], dtype=np.float64
            ).reshape(-1, 4)
            mine = sorted((p for p in preds if int(p[2]) == label), key=lambda p: -float(p[1]))[
                :max_detections
            ]
            det_boxes = np.array([p[0] for p in mine], dtype=np.float64).reshape(-1, 4)
            num_gt += len(gt_boxes)
            scores.extend(float(p[1]) for p in mine)
            for t in IOU_THRESHOLDS:
                hits[t].extend(_match(det_boxes, gt_boxes, t).tolist())
        # Stable rank: ties keep image order, as COCO's mergesort does.
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
        aps = {
            t: average_precision(np.asarray(hits[t], dtype=bool)[order], num_gt)
            for t in IOU_THRESHOLDS
        }
        recall50 = float(np.sum(hits[0.5])) / num_gt if num_gt else 0.0
        per_class.append(
            ClassResult(
                label_id=label,
                name=names.get(label, str(label)),
                ap50=aps[0.5],
                ap=float(np.mean(list(aps.values()))),
                recall50=recall50,
                num_ground_truth=num_gt,
                num_detections=len(scores),
            )
        )
    map50 = float(np.mean([c.ap50 for c in per_class])) if per_class else float("nan")
    map_ = float(np.mean([c.ap for c in per_class])) if per_class else float("nan")
    return Report(
        tuple(per_class),
        map50,
        map_,
        len(ground_truth),
        tuple(sorted(pred_labels - set(gt_labels))),
    )


def load_coco(
    images_dir: Path, annotations_path: Path
) -> tuple[list[Path], list[list[tuple[Box, int]]], dict[int, str]]:
    """Read a COCO file: image paths, per-image ``(xyxy box, category_id)``, class names."""
    data = json.loads(Path(annotations_path).read_text())
    images = sorted(data["images"], key=lambda im: im["id"])
    index = {im["id"]: i for i, im in enumerate(images)}
    truth: list[list[tuple[Box, int]]] = [[] for _ in images]
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        truth[index[ann["image_id"]]].append(([x, y, x + w, y + h], int(ann["category_id"])))
    names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    paths = [Path(images_dir) / im["file_name"] for im in images]
    return paths, truth, names


def run(
    detect_fn: DetectFn,
    images_dir: Path,
    annotations_path: Path,
    progress: bool = True,
    batch_size: int = 8,
) -> Report:
    """Run ``detect_fn`` over a labelled folder and score it.

    Args:
        detect_fn: Takes a list of image paths, returns per image a list of
            ``(box, score, label_id)``; label ids must be the COCO ``category_id`` s.
        images_dir: Folder the annotations' ``file_name`` s are relative to.
        annotations_path: COCO ``annotations.json``.
        progress: Show a progress bar.
        batch_size: Images passed to one ``detect_fn`` call.
    """
    from tqdm import tqdm

    paths, truth, names = load_coco(images_dir, annotations_path)
    predictions: list[Sequence[tuple[Box, float, int]]] = []
    with tqdm(total=len(paths), desc="evaluate", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            out = list(detect_fn(chunk))
            if len(out) != len(chunk):
                raise ValueError(f"detect_fn returned {len(out)} results for {len(chunk)} images")
            predictions.extend(out)
            bar.update(len(chunk))
    return evaluate_detections(truth, predictions, names)
