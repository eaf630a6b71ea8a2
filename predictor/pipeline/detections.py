"""Model output to the detections a caller asked for: thresholds, class filter, names.

Pure functions over numpy arrays; no torch, no protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class ParameterError(ValueError):
    """A request parameter that is out of range or of the wrong type."""


@dataclass(frozen=True)
class RawDetections:
    """One image's model output: boxes ``N x 4`` (x1, y1, x2, y2 pixels), scores, label ids."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Detections:
    """One image's answer, sorted by score, highest first."""

    boxes: np.ndarray  # float32 N x 4
    scores: np.ndarray  # float32 N
    label_ids: np.ndarray  # int32 N
    names: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class RequestOptions:
    """What one request asked for, validated."""

    score_threshold: float
    max_detections: int
    class_ids: frozenset[int] | None = None


class LabelMap:
    """Names of the classes; id 0 is the background."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._ids: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self._ids.setdefault(name, i)

    def name(self, label_id: int) -> str:
        """The name of ``label_id``, or ``class_<id>`` when the map has none."""
        if 0 <= label_id < len(self.names):
            return self.names[label_id]
        return f"class_{label_id}"

    def ids_for(self, classes: Sequence[Any]) -> frozenset[int]:
        """Class names (or integer ids) to ids; unknown names raise ParameterError."""
        ids: set[int] = set()
        for item in classes:
            # gRPC has no list parameter: ids arrive as a string_param such as "1,3".
            if isinstance(item, str) and item not in self._ids and item.isdigit():
                item = int(item)
            if isinstance(item, bool):
                raise ParameterError(f"classes: {item!r} is neither a class name nor an id")
            if isinstance(item, int):
                if not 0 < item < max(len(self.names), 1):
                    raise ParameterError(
                        f"classes: id {item} is out of range; valid ids are "
                        f"1..{len(self.names) - 1}"
                    )
                ids.add(item)
            elif isinstance(item, str):
                if item not in self._ids or self._ids[item] == 0:
                    known = ", ".join(self.names[1:21])
                    more = " ..." if len(self.names) > 21 else ""
                    raise ParameterError(
                        f"classes: unknown class name {item!r}; known classes: {known}{more}"
                    )
                ids.add(self._ids[item])
            else:
                raise ParameterError(f"classes: {item!r} is neither a class name nor an id")
        return frozenset(ids)


def select(raw: RawDetections, options: RequestOptions, labels: LabelMap,
           image_size: tuple[int, int]) -> Detections:
    """Applies a request's threshold, class filter and count limit to one image's output."""
    scores = np.asarray(raw.scores, dtype=np.float32).reshape(-1)
    boxes = np.asarray(raw.boxes, dtype=np.float32).reshape(-1, 4)
    ids = np.asarray(raw.labels).astype(np.int32).reshape(-1)
    keep = scores >= options.score_threshold
    if options.class_ids is not None:
        keep &= np.isin(ids, np.fromiter(options.class_ids, dtype=np.int32))
    order = np.flatnonzero(keep)
    order = order[np.argsort(-scores[order], kind="stable")][: options.max_detections]
    height, width = image_size
    # Boxes are clipped to the image: a box past the border is never useful downstream.
    kept = boxes[order].copy()
    np.clip(kept[:, 0::2], 0, width, out=kept[:, 0::2])
    np.clip(kept[:, 1::2], 0, height, out=kept[:, 1::2])
    return Detections(
        boxes=kept,
        scores=scores[order],
        label_ids=ids[order],
        names=tuple(labels.name(int(i)) for i in ids[order]),
        image_size=image_size,
    )
