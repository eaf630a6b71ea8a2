"""Detection accuracy: COCO mAP@0.5 and mAP@0.5:0.95 of a served model on a labelled folder,
and recall by object size at the score a user sees (:mod:`client._bands`).

The numbers are computed by ``pycocotools``, the COCO project's own evaluation (optional
extra ``kserve-detector[eval]``: it needs only numpy, so the client stays light and
torch-free). COCO's rules apply: per class and IoU threshold, detections of all images
are ranked by score and matched greedily to unmatched ground truth; AP is the
interpolated precision sampled at 101 recall points; at most ``max_detections`` (100)
highest-scoring detections per image and class count; means are over the classes that
have ground truth, and mAP@0.5:0.95 also over IoU 0.50, 0.55 ... 0.95.

Ground truth comes from a folder of images and a COCO ``annotations.json`` (``bbox`` is
``[x, y, w, h]`` in pixels); predictions come from any ``detect_fn`` (for example one that
calls the server).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._bands import BandRecall, SizeRecall, box_iou, recall_by_size

__all__ = ["BandRecall", "ClassResult", "Report", "SizeRecall", "box_iou", "evaluate_detections",
           "image_sizes", "load_coco", "recall_by_size", "require_pycocotools", "run"]

Box = Sequence[float]
"""``[x1, y1, x2, y2]`` in pixels."""
GroundTruth = Sequence[Sequence[tuple[Box, int]]]
"""Per image: ``(box, label_id)`` pairs."""
Predictions = Sequence[Sequence[tuple[Box, float, int]]]
"""Per image: ``(box, score, label_id)`` triples."""
DetectFn = Callable[[list[Path]], Predictions]



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
        sizes: Recall by size band and false detections at one score threshold (None
            when the image sizes were not given).
    """

    classes: tuple[ClassResult, ...]
    map50: float
    map: float
    num_images: int
    ignored_labels: tuple[int, ...] = field(default=())
    sizes: SizeRecall | None = None

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
            "recall_by_size": None if self.sizes is None else self.sizes.to_dict(),
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
        if self.sizes is not None:
            rows.extend(["", self.sizes.format()])
        return "\n".join(rows)


def require_pycocotools() -> None:
    """Raises ImportError with the install hint when the optional extra is missing."""
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError as exc:
        raise ImportError("evaluation needs pycocotools: pip install 'kserve-detector[eval]'") \
            from exc


def _coco(images: int, annotations: list[dict[str, Any]], labels: Sequence[int]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(images)],
                    "categories": [{"id": int(c)} for c in labels],
                    "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    return coco


def _annotation(index: int, image: int, box: Box, label: int,
                score: float | None) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in box)
    ann = {"id": index + 1, "image_id": image, "category_id": int(label), "iscrowd": 0,
           "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
    if score is not None:
        ann["score"] = float(score)
    return ann


def _counted(preds: Sequence[tuple[Box, float, int]], label: int, limit: int) -> int:
    return min(limit, sum(1 for p in preds if int(p[2]) == label))


def evaluate_detections(
    ground_truth: GroundTruth,
    predictions: Predictions,
    class_names: Mapping[int, str] | None = None,
    max_detections: int = 100,
    sizes: Sequence[tuple[float, float]] | None = None,
    recall_threshold: float = 0.5,
    view: int = 320,
) -> Report:
    """Score predictions against ground truth, image by image (same order, same length).

    Args:
        ground_truth: Per image, ``(box, label_id)`` pairs.
        predictions: Per image, ``(box, score, label_id)`` triples.
        class_names: Names for label ids (default: the id as text).
        max_detections: Highest-scoring detections counted per image and class.
        sizes: Per image, ``(width, height)``: given, the report has recall by size
            band (:func:`recall_by_size`).
        recall_threshold: The score a detection needs to count in the size bands.
        view: Side of the square view the size bands' larger side is measured in.

    Raises:
        ValueError: The sequences differ in length.
        ImportError: pycocotools is not installed.
    """
    require_pycocotools()
    if len(ground_truth) != len(predictions):
        raise ValueError(
            f"{len(ground_truth)} ground-truth images but "
            f"{len(predictions)} prediction lists; they must pair up"
        )
    names = dict(class_names or {})
    gt_labels = sorted({int(lab) for image in ground_truth for _, lab in image})
    pred_labels = {int(lab) for image in predictions for _, _, lab in image}
    labels = sorted(set(gt_labels) | pred_labels)
    truth = [(image, box, lab) for image, gts in enumerate(ground_truth) for box, lab in gts]
    dets = [(image, box, lab, score) for image, preds in enumerate(predictions)
            for box, score, lab in preds]
    gt = _coco(len(ground_truth), [_annotation(i, im, b, lab, None)
                                   for i, (im, b, lab) in enumerate(truth)], labels)
    dt = _coco(len(ground_truth), [_annotation(i, im, b, lab, s)
                                   for i, (im, b, lab, s) in enumerate(dets)], labels)
    from pycocotools.cocoeval import COCOeval

    evaluation = COCOeval(gt, dt, iouType="bbox")
    evaluation.params.catIds = gt_labels
    evaluation.params.maxDets = [max_detections]  # evaluate() sorts the list
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
    # precision: [IoU threshold, recall point, class, area range, max dets]; -1 = no data.
    empty = not gt_labels
    precision = np.zeros((10, 101, 0)) if empty else evaluation.eval["precision"][:, :, :, 0, -1]
    recall = np.zeros((10, 0)) if empty else evaluation.eval["recall"][:, :, 0, -1]

    per_class: list[ClassResult] = []
    for k, label in enumerate(gt_labels):
        by_iou = [float(np.mean(np.maximum(precision[t, :, k], 0.0)))
                  for t in range(precision.shape[0])]
        per_class.append(ClassResult(
            label_id=label, name=names.get(label, str(label)), ap50=by_iou[0],
            ap=float(np.mean(by_iou)), recall50=float(max(recall[0, k], 0.0)),
            num_ground_truth=sum(1 for _, _, lab in truth if int(lab) == label),
            num_detections=sum(_counted(p, label, max_detections) for p in predictions)))
    map50 = float(np.mean([c.ap50 for c in per_class])) if per_class else float("nan")
    map_ = float(np.mean([c.ap for c in per_class])) if per_class else float("nan")
    by_size = None if sizes is None else recall_by_size(ground_truth, predictions, sizes,
                                                        recall_threshold, view)
    return Report(tuple(per_class), map50, map_, len(ground_truth),
                  tuple(sorted(pred_labels - set(gt_labels))), by_size)


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


def image_sizes(annotations_path: Path, paths: Sequence[Path]) -> list[tuple[float, float]]:
    """Each image's ``(width, height)``: from the COCO file, else from the image's header."""
    data = json.loads(Path(annotations_path).read_text())
    by_id = sorted(data["images"], key=lambda im: im["id"])
    sizes: list[tuple[float, float]] = []
    for image, path in zip(by_id, paths, strict=True):
        if image.get("width") and image.get("height"):
            sizes.append((float(image["width"]), float(image["height"])))
            continue
        from PIL import Image

        with Image.open(path) as picture:  # reads the header only
            sizes.append((float(picture.width), float(picture.height)))
    return sizes


def run(
    detect_fn: DetectFn,
    images_dir: Path,
    annotations_path: Path,
    progress: bool = True,
    batch_size: int = 8,
    recall_threshold: float = 0.5,
    view: int = 320,
) -> Report:
    """Run ``detect_fn`` over a labelled folder and score it.

    Args:
        detect_fn: Takes a list of image paths, returns per image a list of
            ``(box, score, label_id)``; label ids must be the COCO ``category_id`` s.
        images_dir: Folder the annotations' ``file_name`` s are relative to.
        annotations_path: COCO ``annotations.json``.
        progress: Show a progress bar.
        batch_size: Images passed to one ``detect_fn`` call.
        recall_threshold: The score a detection needs to count in the recall by size
            (the server's default ``score_threshold`` is 0.5); mAP counts every score
            ``detect_fn`` returns.
        view: Side of the square view the size bands' larger side is measured in.
    """
    from tqdm import tqdm

    require_pycocotools()  # before minutes of requests, not after
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
    sizes = image_sizes(annotations_path, paths)  # after detect_fn has read every image
    return evaluate_detections(truth, predictions, names, sizes=sizes,
                               recall_threshold=recall_threshold, view=view)
