"""Detections to wire formats: V1 JSON objects and V2 output tensors. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .detections import Detections

# (name, datatype, shape with -1 for variable dims); the model metadata lists these.
V2_OUTPUTS: tuple[tuple[str, str, list[int]], ...] = (
    ("detection_boxes", "FP32", [-1, -1, 4]),
    ("detection_scores", "FP32", [-1, -1]),
    ("detection_classes", "INT32", [-1, -1]),
    ("detection_labels", "BYTES", [-1, -1]),
    ("num_detections", "INT32", [-1]),
)


def to_v1(det: Detections) -> dict[str, Any]:
    """One image's detections as the V1 ``predictions`` element."""
    return {
        "detections": [
            {
                "box": [round(float(v), 2) for v in box],
                "score": round(float(score), 5),
                "label": name,
                "label_id": int(label_id),
            }
            for box, score, label_id, name in zip(
                det.boxes, det.scores, det.label_ids, det.names, strict=True
            )
        ],
        "image_size": [int(det.image_size[0]), int(det.image_size[1])],
    }


def to_v2(batch: Sequence[Detections]) -> dict[str, np.ndarray]:
    """A batch of detections as padded V2 tensors (K = most detections in the batch)."""
    count = len(batch)
    k = max((len(d.scores) for d in batch), default=0)
    boxes = np.zeros((count, k, 4), dtype=np.float32)
    scores = np.zeros((count, k), dtype=np.float32)
    classes = np.full((count, k), -1, dtype=np.int32)
    labels = np.full((count, k), b"", dtype=np.object_)
    num = np.zeros((count,), dtype=np.int32)
    for i, det in enumerate(batch):
        n = len(det.scores)
        num[i] = n
        boxes[i, :n] = det.boxes
        scores[i, :n] = det.scores
        classes[i, :n] = det.label_ids
        for j, name in enumerate(det.names):
            labels[i, j] = name.encode("utf-8")
    return {
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": classes,
        "detection_labels": labels,
        "num_detections": num,
    }
