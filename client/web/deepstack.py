"""The DeepStack / CodeProject.AI detection API, so that NVRs and home-automation systems
use the inference service as their detector without a change on their side.

``POST /v1/vision/detection`` and ``POST /v1/vision/custom/{model}`` take a multipart
form: the picture in ``image``, an optional ``min_confidence`` (0 to 1) and an optional
``api_key``; other fields are ignored, as DeepStack ignores them. The answer is what those
clients read (DeepStack's server/response/response.go, CodeProject.AI's SDK):

    {"success": true, "predictions": [{"label": "person", "confidence": 0.91,
      "x_min": 12, "y_min": 40, "x_max": 96, "y_max": 230}, ...],
     "count": 1, "message": "Found person", "inferenceMs": 21, "processMs": 24,
     "code": 200, "command": "detect", "moduleId": "kserve-detector"}

Predictions are sorted by confidence, highest first (Frigate stops reading at the first
one under its own threshold), boxes are whole pixels of the picture as sent, and labels
go through ``--label-map``. Failures keep that shape too: ``{"success": false, "error":
..., "code": <status>}`` (see :mod:`client.web.errors`). The picture reaches the service
through the same :class:`~client.AsyncDetectionClient` as the page's own API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from client import ImageResult

from . import api
from .errors import ApiError
from .settings import WebSettings
from .uploads import check_picture, read_form

__all__ = ["MODULE_ID", "DeepStackRequest", "answer", "detection", "predictions",
           "read_request", "score_threshold"]

#: What ``moduleId`` says answered (CodeProject.AI names its detection module there).
MODULE_ID = "kserve-detector"
# The form fields are few; a bound keeps a hostile form small.
_MAX_FIELDS = 16
_HOW = ("send the picture as multipart/form-data in the 'image' field "
        "(e.g. curl -F image=@picture.jpg)")


@dataclass(frozen=True)
class DeepStackRequest:
    """What one DeepStack call asks: a picture, and its options."""

    picture: bytes
    min_confidence: float | None = None
    api_key: str | None = field(default=None, repr=False)


async def read_request(request: Request, settings: WebSettings) -> DeepStackRequest:
    """Reads the form of a DeepStack call within the upload limits.

    Raises:
        ApiError: 413 when too large; 400 with no ``image`` file, more than one picture,
            something that is not a picture, or a ``min_confidence`` that is not a number
            or is over 1.
    """
    form = await read_form(request, settings, max_files=1, max_fields=_MAX_FIELDS, how=_HOW,
                           too_many="send one picture per request, in the 'image' field")
    try:
        images = form.getlist("image")
        if not images:
            raise ApiError(400, f"no picture in the request: {_HOW}")
        (image,) = images  # a second file part was refused by the parser
        if not isinstance(image, UploadFile):
            raise ApiError(400, f"the 'image' field is text, not a file: {_HOW}")
        data = await image.read()
        check_picture(image.filename or "image", data)
        return DeepStackRequest(picture=data,
                                min_confidence=_confidence(_first_text(form, "min_confidence")),
                                api_key=_first_text(form, "api_key"))
    finally:
        await form.close()


def _first_text(form: Any, name: str) -> str | None:
    """The first value of a text field (DeepStack reads the first too); None when blank."""
    values = form.getlist(name)
    if not values:
        return None
    if not isinstance(values[0], str):
        raise ApiError(400, f"'{name}' is a text field, not a file")
    return values[0].strip() or None


def _confidence(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value > 1.0:
        raise ApiError(400, f"min_confidence must be a number from 0 to 1, got {text!r}")
    return value


def score_threshold(min_confidence: float | None, floor: float) -> float | None:
    """The ``score_threshold`` to ask the service for: None (its default) when the caller
    gave none, else ``min_confidence``, never below the service's minimum ``floor``."""
    return None if min_confidence is None else max(min_confidence, floor)


def _pixel(value: float, size: int) -> int:
    """A box edge as whole pixels: the nearest, halves up, inside ``0..size``."""
    return min(max(math.floor(value + 0.5), 0), size)


def predictions(result: ImageResult, label_map: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``predictions`` of one picture's result, highest confidence first."""
    height, width = result.image_size
    ranked = sorted(result.detections, key=lambda d: -d.score)
    return [{"label": label_map.get(d.label, d.label), "confidence": d.score,
             "x_min": _pixel(d.box[0], width), "y_min": _pixel(d.box[1], height),
             "x_max": _pixel(d.box[2], width), "y_max": _pixel(d.box[3], height)}
            for d in ranked]


def answer(result: ImageResult, label_map: Mapping[str, str], *, inference_s: float,
           total_s: float, command: str = "detect") -> dict[str, Any]:
    """The whole success answer: DeepStack's fields, then CodeProject.AI's.

    Args:
        result: The service's result for the picture.
        label_map: The model's label -> the product's name.
        inference_s: The backend's call to the inference service (``inferenceMs``).
        total_s: The backend's whole handling of the request (``processMs``).
        command: ``detect``, or ``custom`` on ``/v1/vision/custom/{model}``.
    """
    found = predictions(result, label_map)
    labels: Sequence[str] = sorted({p["label"] for p in found})
    return {
        "success": True,
        "predictions": found,
        "count": len(found),
        "message": f"Found {', '.join(labels)}" if labels else "No objects found",
        "inferenceMs": round(inference_s * 1000),
        "processMs": round(total_s * 1000),
        "code": 200,
        "command": command,
        "moduleId": MODULE_ID,
    }


async def detection(request: Request) -> Response:
    """``POST /v1/vision/detection`` and ``POST /v1/vision/custom/{model}``.

    ``{model}`` must be the served model's name (one backend fronts one model).
    """
    backend = api.backend_of(request)
    started = time.perf_counter()
    served = backend.settings.client.model
    custom = request.path_params.get("model")
    if custom is not None and custom != served:
        raise ApiError(404, f"no model {custom!r} here: this backend serves {served!r} "
                            f"(POST /v1/vision/custom/{served} or /v1/vision/detection)")
    with backend.holding(1):
        try:
            call = await read_request(request, backend.settings)
        except ClientDisconnect:
            return Response(status_code=api.CLIENT_CLOSED)
        backend.check_key(request, call.api_key)
        threshold = score_threshold(call.min_confidence, backend.settings.min_score_threshold)
        (result,), inference_s = await api.infer(backend, [call.picture],
                                                 score_threshold=threshold)
    total_s = time.perf_counter() - started
    body = answer(result, backend.settings.label_map, inference_s=inference_s,
                  total_s=total_s, command="detect" if custom is None else "custom")
    timing = f"inference;dur={inference_s * 1000:.1f}, total;dur={total_s * 1000:.1f}"
    return JSONResponse(body, headers={"Server-Timing": timing, "Cache-Control": "no-store"})
