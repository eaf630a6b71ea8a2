"""Detections made up for the wire tests."""

from __future__ import annotations

import numpy as np

from predictor.pipeline.detections import Detections


def dets(n: int, size: tuple[int, int] = (480, 640), first_label: int = 1) -> Detections:
    boxes = np.array([[10.123456 + i, 20.987654, 100.005, 200.0] for i in range(n)],
                     dtype=np.float32).reshape(-1, 4)
    scores = np.array([0.987654321 - 0.1 * i for i in range(n)], dtype=np.float32)
    ids = np.array([first_label + i for i in range(n)], dtype=np.int32)
    names = tuple(f"name{i}" for i in ids)
    return Detections(boxes=boxes, scores=scores, label_ids=ids, names=names, image_size=size)
