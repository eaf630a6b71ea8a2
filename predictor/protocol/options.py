"""Request ``parameters`` to validated options: threshold, detection cap, class filter.

The same keys over every protocol: ``score_threshold``, ``max_detections`` and
``classes`` (a list of names or ids, or one comma-separated string, which is all gRPC
can carry). Unknown keys are ignored, as other V2 servers do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..pipeline.detections import LabelMap, ParameterError, RequestOptions


def _number(value: Any) -> Any:
    """Numbers sent as strings (gRPC string_param, query-like clients) are accepted."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eEn") else int(value)
        except ValueError:
            return value
    return value


def parse_options(
    params: Mapping[str, Any] | None,
    labels: LabelMap,
    *,
    default_threshold: float,
    min_threshold: float,
    max_detections: int,
) -> RequestOptions:
    """Validates a request's ``parameters``; unknown keys are ignored."""
    params = params or {}
    if not isinstance(params, Mapping):
        raise ParameterError(f"parameters must be an object, got {type(params).__name__}")
    threshold = _number(params.get("score_threshold", default_threshold))
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ParameterError(f"score_threshold must be a number, got {threshold!r}")
    threshold = float(threshold)
    if math.isnan(threshold) or not min_threshold <= threshold <= 1.0:
        raise ParameterError(
            f"score_threshold {threshold} is out of range; it must be between "
            f"{min_threshold} (--min_score_threshold) and 1"
        )
    limit = _number(params.get("max_detections", max_detections))
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ParameterError(f"max_detections must be an integer, got {limit!r}")
    if not 1 <= limit <= max_detections:
        raise ParameterError(
            f"max_detections {limit} is out of range; it must be between 1 and "
            f"{max_detections} (--max_detections)"
        )
    classes = params.get("classes")
    class_ids = None
    if classes is not None:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        if not isinstance(classes, (list, tuple)):
            raise ParameterError(f"classes must be a list of class names, got {classes!r}")
        class_ids = labels.ids_for(classes)
    return RequestOptions(score_threshold=threshold, max_detections=limit, class_ids=class_ids)
