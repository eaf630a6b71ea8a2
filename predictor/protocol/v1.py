"""KServe V1 (``:predict``): JSON instances or one raw image file in, predictions out.

An instance is ``{"image_bytes": {"b64": ...}}``, ``{"image": {"b64": ...}}`` (KServe's
samples), ``{"b64": ...}`` or a bare base64 string; ``parameters`` travel beside
``instances``. A raw body (an image file sent as the body) is one image with no
parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..pipeline.decode import ImageSource
from ..pipeline.detections import Detections
from .b64 import b64decode
from .errors import RequestError, check_count
from .messages import Request


def _instance_bytes(instance: Any, where: str) -> bytes:
    value = instance
    if isinstance(instance, Mapping):
        for key in ("image_bytes", "image", "b64"):
            if key in instance:
                value = instance[key] if key != "b64" else {"b64": instance["b64"]}
                break
        else:
            keys = ", ".join(sorted(map(str, instance))) or "none"
            raise RequestError(f'{where}: no image found (keys: {keys}); send '
                               f'{{"image_bytes": {{"b64": "<base64 image>"}}}}')
    if isinstance(value, Mapping):
        if "b64" not in value:
            raise RequestError(f'{where}: expected {{"b64": "<base64 image>"}}')
        value = value["b64"]
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a base64 string, got {type(value).__name__}")
    return b64decode(value, where)


def parse_v1(body: Any, max_images: int) -> Request:
    """Parses a V1 body: a JSON object with ``instances``, or a raw image file as bytes."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return Request([bytes(body)])
    if not isinstance(body, Mapping):
        raise RequestError(f'request body must be a JSON object with "instances", '
                           f"got {type(body).__name__}")
    instances = body.get("instances", body.get("inputs"))
    if instances is None:
        raise RequestError('request body has no "instances" list')
    if not isinstance(instances, list):
        raise RequestError(f'"instances" must be a list, got {type(instances).__name__}')
    check_count(len(instances), max_images, '"instances"')
    sources: list[ImageSource] = [
        _instance_bytes(inst, f"instances[{i}]") for i, inst in enumerate(instances)]
    params = body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise RequestError(f'"parameters" must be an object, got {type(params).__name__}')
    return Request(sources, params)


def prediction(det: Detections) -> dict[str, Any]:
    """One image's detections as the V1 ``predictions`` element."""
    return {
        "detections": [
            {"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
             "label": name, "label_id": int(label_id)}
            for box, score, label_id, name in zip(
                det.boxes, det.scores, det.label_ids, det.names, strict=True)
        ],
        "image_size": [int(det.image_size[0]), int(det.image_size[1])],
    }


def answer(dets: Sequence[Detections]) -> dict[str, Any]:
    """The V1 response body."""
    return {"predictions": [prediction(d) for d in dets]}
