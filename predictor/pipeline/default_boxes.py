"""Default-box (anchor) sizes of an SSD or SSDlite model, read from ``config.json``.

torchvision's SSD builders make their ``DefaultBoxGenerator`` themselves (``ssdlite320``:
``min_ratio=0.2, max_ratio=0.95``, so its smallest box is about 64 px of the 320 px input)
and no builder argument replaces it. A model trained with other box sizes says so in its
``config.json``::

    "anchors": {"min_ratio": 0.1, "max_ratio": 0.95}

or with every scale spelled out (one per feature map, plus the last one that only sets
the extra aspect-1 box of the last map)::

    "anchors": {"scales": [0.1, 0.27, 0.44, 0.61, 0.78, 0.95, 1.0]}

and optionally ``"aspect_ratios"`` (one list per feature map). The generator is swapped on
the built model; the number of boxes per location must stay the builder's, so the head and
its weights keep their shapes. The boxes are computed from the generator once per input
shape (:mod:`.anchors` caches them) whatever their sizes, so other sizes cost nothing at
inference.

Upstream: torchvision/models/detection/anchor_utils.py (``DefaultBoxGenerator``: scales
spread evenly from ``min_ratio`` to ``max_ratio``, then 1.0) and ssdlite.py (the builder).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

KEYS = ("min_ratio", "max_ratio", "scales", "aspect_ratios")


class AnchorError(ValueError):
    """The ``anchors`` setting does not fit the model; the message says how."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _aspect_ratios(value: Any, built: DefaultBoxGenerator) -> list[list[float]]:
    maps = len(built.aspect_ratios)
    if (not isinstance(value, list) or len(value) != maps
            or not all(isinstance(r, list) and all(_number(x) and x > 0 for x in r)
                       for r in value)):
        raise AnchorError(f"\"aspect_ratios\" must be {maps} lists (one per feature map) of "
                          f"positive numbers, got {value!r}")
    want, got = built.num_anchors_per_location(), [2 + 2 * len(r) for r in value]
    if got != want:
        raise AnchorError(f"\"aspect_ratios\" {value!r} gives {got} boxes per location; the "
                          f"model's head has {want} (keep as many ratios per map)")
    return [[float(x) for x in r] for r in value]


def _scales(spec: Mapping[str, Any], maps: int, built: DefaultBoxGenerator) -> list[float]:
    if "scales" in spec:
        if "min_ratio" in spec or "max_ratio" in spec:
            raise AnchorError("give \"scales\" or \"min_ratio\"/\"max_ratio\", not both")
        scales = spec["scales"]
        if (not isinstance(scales, list) or len(scales) != maps + 1
                or not all(_number(s) and 0 < s <= 1 for s in scales)):
            raise AnchorError(f"\"scales\" must be {maps + 1} numbers in (0, 1] (one per "
                              f"feature map and a last one), got {scales!r}")
        return [float(s) for s in scales]
    # The built generator's own spread: scales[0] = min_ratio, scales[-2] = max_ratio.
    low = spec.get("min_ratio", built.scales[0])
    high = spec.get("max_ratio", built.scales[-2])
    if not (_number(low) and _number(high) and 0 < low < high <= 1):
        raise AnchorError(f"need 0 < min_ratio < max_ratio <= 1, got min_ratio={low!r}, "
                          f"max_ratio={high!r}")
    step = (high - low) / max(maps - 1, 1)
    return [float(low + step * k) for k in range(maps)] + [1.0]


def apply_anchors(model: nn.Module, spec: Any) -> DefaultBoxGenerator:
    """Replaces ``model.anchor_generator`` as ``spec`` (config.json's ``anchors``) says.

    Returns the new generator. Raises :class:`AnchorError` when the model has no SSD
    default boxes, a key is unknown, a value is out of range, or the boxes per location
    would change.
    """
    built = getattr(model, "anchor_generator", None)
    if not isinstance(built, DefaultBoxGenerator):
        # The R-CNN family keeps its (other kind of) generator in the RPN.
        other = built or getattr(getattr(model, "rpn", None), "anchor_generator", None)
        kind = type(other).__name__ if other is not None else "no anchor generator"
        raise AnchorError(f"\"anchors\" applies to SSD and SSDlite models (DefaultBoxGenerator); "
                          f"this model has {kind}")
    if not isinstance(spec, Mapping) or not spec:
        raise AnchorError(f"\"anchors\" must be an object with some of {', '.join(KEYS)}, "
                          f"got {spec!r}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise AnchorError(f"\"anchors\" has unknown keys {unknown}; allowed: {', '.join(KEYS)}")
    ratios = (_aspect_ratios(spec["aspect_ratios"], built) if "aspect_ratios" in spec
              else [list(r) for r in built.aspect_ratios])
    generator = DefaultBoxGenerator(ratios, scales=_scales(spec, len(ratios), built),
                                    steps=built.steps, clip=built.clip)
    model.anchor_generator = generator
    return generator

