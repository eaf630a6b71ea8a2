"""A compiled model folder, run with OpenVINO and numpy alone: no torch, no torchvision.

``python -m predictor.export`` (:mod:`predictor.export`) writes the folder: the dense
graph as OpenVINO IR (``model.xml`` / ``model.bin``), the anchors (``anchors.npy``), the
labels, and ``compiled.json`` with everything the steps around the graph need. Here those
steps are written again in numpy, following torchvision 0.29's SSD code
(``models/detection/ssd.py`` ``postprocess_detections``, ``_utils.py`` ``BoxCoder``,
``ops/boxes.py`` ``batched_nms``, ``transform.py`` for the resize), and the export's test
holds them to the torch path's answers (same labels, boxes within 1 px, scores within 0.01).

Supported families: ``ssd`` (SSD300 and SSDlite320: one fixed input size).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .detections import RawDetections

MANIFEST = "compiled.json"
FORMAT = "kserve-detector-compiled/1"
FAMILIES = ("ssd",)


class CompiledError(ValueError):
    """A compiled folder that cannot be served: which file, what is wrong."""


def is_compiled(folder: Path) -> bool:
    """Whether ``folder`` holds a compiled model (its manifest)."""
    return (folder / MANIFEST).is_file()


@dataclass(frozen=True)
class Manifest:
    """``compiled.json``: what the runtime needs around the graph."""

    architecture: str
    family: str
    labels: list[str]
    version: str
    size: tuple[int, int]  # (height, width) every picture is resized to
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int
    box_weights: tuple[float, float, float, float]
    precision: str
    raw: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Reads and checks ``folder/compiled.json``; CompiledError names what is wrong."""
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise CompiledError(f"{path}: format {data.get('format')!r}, this server "
                                    f"reads {FORMAT!r}: export the model again")
            if data["family"] not in FAMILIES:
                raise CompiledError(f"{path}: family {data['family']!r} is not one this "
                                    f"server runs ({', '.join(FAMILIES)})")
            post = data["postprocess"]
            return cls(
                architecture=str(data["architecture"]), family=str(data["family"]),
                labels=[str(x) for x in data["labels"]], version=str(data["version"]),
                size=(int(data["input"]["size"][0]), int(data["input"]["size"][1])),
                mean=tuple(float(x) for x in data["input"]["mean"]),  # type: ignore[arg-type]
                std=tuple(float(x) for x in data["input"]["std"]),  # type: ignore[arg-type]
                score_thresh=float(post["score_thresh"]), nms_thresh=float(post["nms_thresh"]),
                topk_candidates=int(post["topk_candidates"]),
                detections_per_img=int(post["detections_per_img"]),
                box_weights=tuple(float(x) for x in post["box_weights"]),  # type: ignore[arg-type]
                precision=str(data["precision"]), raw=data)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            if isinstance(exc, CompiledError):
                raise
            raise CompiledError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``H x W x C`` float32 resized like ``F.interpolate(bilinear, align_corners=False)``
    without antialiasing (what torchvision's detection transform does)."""
    def axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = in_size / out_size
        src = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, (src - low).astype(np.float32)

    y0, y1, wy = axis(height, image.shape[0])
    x0, x1, wx = axis(width, image.shape[1])
    rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.asarray(out, dtype=np.float32)


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray,
                 weights: tuple[float, float, float, float]) -> np.ndarray:
    """Box deltas against ``anchors`` (xyxy) to xyxy boxes, as torchvision's BoxCoder."""
    clip = math.log(1000.0 / 16)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = np.minimum(deltas[:, 2] / ww, clip)
    dh = np.minimum(deltas[:, 3] / wh, clip)
    cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
    w, h = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                threshold: float) -> np.ndarray:
    """NMS within each label (boxes of different labels never suppress each other)."""
    if not boxes.size:
        return np.zeros(0, dtype=np.int64)
    offsets = labels.astype(boxes.dtype) * (float(boxes.max()) + 1)
    return nms(boxes + offsets[:, None], scores, threshold)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


class CompiledModel:
    """A compiled folder, ready to run; ``run`` is safe from several threads."""

    def __init__(self, folder: Path, threads: int = 1, workers: int = 1,
                 cache_dir: str | None = None) -> None:
        import openvino as ov

        from .precision import Precision, native_precisions, ov_config

        self.folder = folder
        self.manifest = Manifest.read(folder)
        self.anchors = np.load(folder / "anchors.npy").astype(np.float32)
        core = ov.Core()
        if cache_dir:
            core.set_property({"CACHE_DIR": str(Path(cache_dir) / "openvino")})
        wanted = Precision(self.manifest.precision)
        # The export checked this precision; a CPU without it natively runs fp32.
        self.precision = wanted if wanted in native_precisions() else Precision.FP32
        config = ov_config(self.precision, threads, workers)
        self.compiled = core.compile_model(self._with_preprocessing(core.read_model(
            str(folder / "model.xml"))), "CPU", config)
        self._local = threading.local()

    def _with_preprocessing(self, model: Any) -> Any:
        """The graph taking ``1 x H x W x 3`` uint8 pictures of any size: resize (bilinear,
        half-pixel centres, no antialiasing: torchvision's) and normalisation run inside
        it, in OpenVINO's kernels (in numpy they cost as much as the graph itself)."""
        import openvino as ov
        from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

        ppp = PrePostProcessor(model)
        tensor = ppp.input().tensor()
        tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        tensor.set_spatial_dynamic_shape()
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess()
        steps.convert_element_type(ov.Type.f32).resize(ResizeAlgorithm.RESIZE_LINEAR)
        steps.scale(255.0).mean(list(self.manifest.mean)).scale(list(self.manifest.std))
        return ppp.build()

    def postprocess(self, deltas: np.ndarray, logits: np.ndarray, size: tuple[int, int]
                    ) -> RawDetections:
        """One picture's graph outputs to detections in the picture's own pixels."""
        m = self.manifest
        height, width = m.size
        boxes = decode_boxes(deltas, self.anchors, m.box_weights)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        scores = softmax(logits)
        found_boxes, found_scores, found_labels = [], [], []
        for label in range(1, scores.shape[1]):
            score = scores[:, label]
            idx = np.flatnonzero(score > m.score_thresh)
            if len(idx) > m.topk_candidates:
                idx = idx[np.argsort(-score[idx], kind="stable")[:m.topk_candidates]]
            found_boxes.append(boxes[idx])
            found_scores.append(score[idx])
            found_labels.append(np.full(len(idx), label, dtype=np.int64))
        all_boxes = np.concatenate(found_boxes)
        all_scores = np.concatenate(found_scores)
        all_labels = np.concatenate(found_labels)
        keep = batched_nms(all_boxes, all_scores, all_labels, m.nms_thresh)
        keep = keep[:m.detections_per_img]
        scale = np.array([size[1] / width, size[0] / height] * 2, dtype=np.float32)
        return RawDetections(boxes=(all_boxes[keep] * scale).astype(np.float32),
                             scores=all_scores[keep].astype(np.float32),
                             labels=all_labels[keep])

    def run(self, images: Sequence[np.ndarray],
            sizes: Sequence[tuple[int, int]] | None = None) -> list[RawDetections]:
        """Detects objects in ``H x W x 3`` uint8 RGB pictures; boxes in their pixels, or
        in ``sizes`` (height, width) when given (a picture decoded at reduced scale)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = []
        for i, image in enumerate(images):
            request.infer({0: np.ascontiguousarray(image)[None]}, share_inputs=True)
            deltas = np.array(request.get_output_tensor(0).data)[0]
            logits = np.array(request.get_output_tensor(1).data)[0]
            size = sizes[i] if sizes is not None else (image.shape[0], image.shape[1])
            out.append(self.postprocess(deltas, logits, size))
        return out
