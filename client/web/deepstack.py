"""The DeepStack / CodeProject.AI detection API, so that NVRs and home-automation systems
use the inference service as their detector without a change on their side.

``POST /v1/vision/detection`` and ``POST /v1/vision/custom/{model}`` take a multipart
form: the picture (the ``image`` file part, else the first file part of any name), an
optional ``min_confidence`` (0 to 1, 0.4 when absent) and an optional ``api_key``; other
fields and parts are ignored. The answer is what those clients read (DeepStack's
server/response/response.go, CodeProject.AI's SDK and server):

    {"success": true, "predictions": [{"label": "person", "confidence": 0.91,
      "x_min": 12, "y_min": 40, "x_max": 96, "y_max": 230}, ...],
     "count": 1, "message": "Found person", "duration": 0.024, "inferenceMs": 21,
     "processMs": 24, "analysisRoundTripMs": 21, "code": 200, "command": "detect",
     "moduleId": "kserve-detector", "moduleName": "KServe detector",
     "requestId": "…", "inferenceDevice": "CPU", "processedBy": "<host>",
     "timestampUTC": "Mon, 07 Dec 2026 23:40:00 GMT"}

Predictions are sorted by confidence, highest first (Frigate stops reading at the first
one under its own threshold), at most ``--max-predictions`` (20: what Frigate holds),
boxes are whole pixels of the picture as sent, and labels go through ``--label-map``.
Failures keep that shape too: ``{"success": false, "error": ..., "code": <status>}`` (see
:mod:`client.web.errors`). The picture reaches the service through the same
:class:`~client.AsyncDetectionClient` as the page's own API.

``POST /v1/vision/custom/list`` lists the custom models (every model the service serves), and
``GET /v1/server/status/ping`` and ``GET /v1/status/ping`` answer as CodeProject.AI's do.
"""

from __future__ import annotations

import math
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from client import ImageResult, __version__

from . import api
from .errors import ApiError
from .models import client_for_name, served_names
from .settings import WebSettings
from .uploads import check_picture, read_form, read_fraction

__all__ = ["DEFAULT_MIN_CONFIDENCE", "MIN_CONFIDENCE_FLOOR", "MODULE_ID", "MODULE_NAME",
           "Answering", "DeepStackRequest", "answer", "custom_list", "detection", "ping",
           "predictions", "read_request", "score_threshold"]

#: What ``moduleId`` says answered (CodeProject.AI names its detection module there).
MODULE_ID = "kserve-detector"
#: ``moduleName``: the module's name for a person (CodeProject.AI: "Object Detection
#: (YOLOv5 6.2)").
MODULE_NAME = "KServe detector"
#: ``min_confidence`` when the caller sends none. Both real servers use 0.4: DeepStack's
#: server/server.go ``detection()`` (johnolafenwa/DeepStack at 73b6f7ab, "0.40") and
#: CodeProject.AI's modules/ObjectDetectionYOLOv5-6.2/detect_adapter.py ``process()``
#: (codeproject/CodeProject.AI-Server at e3468c831). Frigate never sends it.
DEFAULT_MIN_CONFIDENCE = 0.4
#: DeepStack raises any lower ``min_confidence`` to this, silently
#: (intelligencelayer/shared/process.py ``YOLODetector.predict``, at 73b6f7ab:
#: ``max(0.1, confidence)``), after refusing one over 1 (server/middlewares/middlewares.go
#: ``CheckConfidence``).
MIN_CONFIDENCE_FLOOR = 0.1
# Parts of any kind: a DeepStack call has three; a bound keeps a hostile form small.
_MAX_PARTS = 16
_HOW = ("send the picture as multipart/form-data in the 'image' field "
        "(e.g. curl -F image=@picture.jpg)")


@dataclass(frozen=True)
class DeepStackRequest:
    """What one DeepStack call asks: a picture, and its options."""

    picture: bytes
    min_confidence: float | None = None


@dataclass(frozen=True)
class Answering:
    """What every DeepStack answer of one backend shares: made once, when the app starts.

    Attributes:
        model: The served model, the one custom model.
        label_map: The model's label -> the product's name.
        max_predictions: Most predictions in an answer.
        inference_device: ``inferenceDevice``.
        processed_by: ``processedBy``: this host's name.
        min_score_threshold: The inference service's lowest ``score_threshold``.
    """

    model: str
    label_map: Mapping[str, str]
    max_predictions: int
    inference_device: str
    processed_by: str
    min_score_threshold: float

    @classmethod
    def of(cls, settings: WebSettings) -> Answering:
        """The answering details for ``settings`` on this host."""
        return cls(model=settings.client.model, label_map=settings.label_map,
                   max_predictions=settings.max_predictions,
                   inference_device=settings.inference_device,
                   processed_by=socket.gethostname(),
                   min_score_threshold=settings.min_score_threshold)

    def system_fields(self, command: str, round_trip_s: float) -> dict[str, Any]:
        """The fields CodeProject.AI's server and SDK add to every module's answer.

        Their names, types and meanings: codeproject/CodeProject.AI-Server at e3468c831,
        src/server/Modules/BackendRouteMap.cs (``_systemAppendedOutputs``); ``requestId`` is
        a GUID string (src/SDK/NET/Backend/BackendRequests.cs), ``timestampUTC`` is .NET's
        ``DateTime.UtcNow.ToString("R")``, RFC 1123 (src/server/Controllers/ProxyController.cs).
        """
        return {"code": 200, "command": command, "moduleId": MODULE_ID,
                "moduleName": MODULE_NAME, "requestId": str(uuid.uuid4()),
                "inferenceDevice": self.inference_device,
                "analysisRoundTripMs": round(round_trip_s * 1000),
                "processedBy": self.processed_by,
                "timestampUTC": formatdate(usegmt=True)}


def answering_of(request: Request) -> Answering:
    """The app's :class:`Answering`."""
    answering: Answering = request.app.state.deepstack
    return answering


async def read_request(request: Request, settings: WebSettings,
                       check_key: Callable[[str | None], None]) -> DeepStackRequest:
    """Reads the form of a DeepStack call within the upload limits, checking the key first.

    The checks run in DeepStack's order (its server/server.go route: ``CheckApiKey``, then
    ``CheckImage``, then ``CheckConfidence``): a caller without the right key hears 401
    whatever else is wrong with the request.

    Args:
        request: The request.
        settings: The limits.
        check_key: Raises 401 unless the key (the ``api_key`` field, or None) is right.

    Raises:
        ApiError: 401 from ``check_key``; 413 when too large; 400 with no picture,
            something that is not a picture, or a ``min_confidence`` that is not a number
            from 0 to 1.
    """
    try:
        form = await read_form(request, settings, max_files=_MAX_PARTS,
                               max_fields=_MAX_PARTS, how=_HOW,
                               too_many=f"too many parts: at most {_MAX_PARTS}; {_HOW}")
    except ApiError as exc:
        if exc.status == 400:  # not a form at all: no api_key field either
            check_key(None)
        raise
    try:
        check_key(_first_text(form, "api_key"))
        image = _picture_part(form)
        data = await image.read()
        check_picture(image.filename or "image", data)
        return DeepStackRequest(
            picture=data,
            min_confidence=read_fraction("min_confidence", _first_text(form, "min_confidence")))
    finally:
        await form.close()


def _picture_part(form: FormData) -> UploadFile:
    """The ``image`` file part (DeepStack's field), else the first file part whatever its
    name, as CodeProject.AI takes it: its server hands every file part to the module
    (src/server/Controllers/ProxyController.cs ``CreatePayload``) and the module reads the
    first (modules/ObjectDetectionYOLOv5-6.2/detect_adapter.py, ``data.get_image(0)``);
    the other parts are ignored."""
    named = [value for value in form.getlist("image") if isinstance(value, UploadFile)]
    if named:
        return named[0]
    first = next((value for _, value in form.multi_items() if isinstance(value, UploadFile)),
                 None)
    if first is not None:
        return first
    if form.getlist("image"):
        raise ApiError(400, f"the 'image' field is text, not a file: {_HOW}")
    raise ApiError(400, f"no picture in the request: {_HOW}")


def _first_text(form: FormData, name: str) -> str | None:
    """The first value of a text field (DeepStack reads the first too); None when blank."""
    values = form.getlist(name)
    if not values:
        return None
    if not isinstance(values[0], str):
        raise ApiError(400, f"'{name}' is a text field, not a file")
    return values[0].strip() or None


def score_threshold(min_confidence: float | None, service_floor: float) -> float:
    """The ``score_threshold`` to ask the service for.

    ``min_confidence``, or 0.4 when the caller gave none (:data:`DEFAULT_MIN_CONFIDENCE`),
    raised to DeepStack's floor of 0.1 and to the service's own minimum
    (``service_floor``), whichever is higher.
    """
    wanted = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    return max(wanted, MIN_CONFIDENCE_FLOOR, service_floor)


def _pixel(value: float, size: int) -> int:
    """A box edge as whole pixels: the nearest, halves up, inside ``0..size``."""
    return min(max(math.floor(value + 0.5), 0), size)


def predictions(result: ImageResult, label_map: Mapping[str, str],
                max_predictions: int | None = None) -> list[dict[str, Any]]:
    """The ``predictions`` of one picture's result, highest confidence first, at most
    ``max_predictions`` of them (None: all)."""
    height, width = result.image_size
    ranked = sorted(result.detections, key=lambda d: -d.score)[:max_predictions]
    return [{"label": label_map.get(d.label, d.label), "confidence": d.score,
             "x_min": _pixel(d.box[0], width), "y_min": _pixel(d.box[1], height),
             "x_max": _pixel(d.box[2], width), "y_max": _pixel(d.box[3], height)}
            for d in ranked]


def answer(result: ImageResult, answering: Answering, *, inference_s: float,
           total_s: float, command: str = "detect") -> dict[str, Any]:
    """The whole success answer: DeepStack's fields, then CodeProject.AI's.

    Args:
        result: The service's result for the picture.
        answering: The backend's label map, cap and identity.
        inference_s: The backend's call to the inference service (``inferenceMs``, and
            ``analysisRoundTripMs``: the round trip to the service that analyses it).
        total_s: The backend's whole handling of the request (``processMs``; ``duration``
            in seconds).
        command: ``detect``, or ``custom`` on ``/v1/vision/custom/{model}``.
    """
    found = predictions(result, answering.label_map, answering.max_predictions)
    labels = sorted({p["label"] for p in found})
    return {
        "success": True,
        "predictions": found,
        "count": len(found),
        "message": f"Found {', '.join(labels)}" if labels else "No objects found",
        # DeepStack's DetectionResponse has a float64 "duration" (server/response/
        # response.go at 73b6f7ab); its handler times the call in seconds
        # (time.Since(t1).Seconds() in server/server.go), so seconds it is.
        "duration": round(total_s, 4),
        "inferenceMs": round(inference_s * 1000),
        "processMs": round(total_s * 1000),
        **answering.system_fields(command, inference_s),
    }


async def detection(request: Request) -> Response:
    """``POST /v1/vision/detection`` and ``POST /v1/vision/custom/{model}``.

    ``{model}`` is the name of a model the inference service serves: the backend's own
    (``--model``), or another of a service with several (``--model_repository``).
    """
    backend = api.backend_of(request)
    answering = answering_of(request)
    started = time.perf_counter()
    custom = request.path_params.get("model")
    try:
        client = await client_for_name(backend.models, backend.client, custom)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ApiError(404, f"{exc.message} (POST /v1/vision/custom/NAME or "
                            f"/v1/vision/detection)") from None
    with backend.holding(1):
        try:
            call = await read_request(request, backend.settings,
                                      lambda key: backend.check_key(request, key))
        except ClientDisconnect:
            return Response(status_code=api.CLIENT_CLOSED)
        threshold = score_threshold(call.min_confidence, answering.min_score_threshold)
        (result,), inference_s = await api.infer(backend, [call.picture],
                                                 score_threshold=threshold, client=client)
    total_s = time.perf_counter() - started
    body = answer(result, answering, inference_s=inference_s, total_s=total_s,
                  command="detect" if custom is None else "custom")
    timing = f"inference;dur={inference_s * 1000:.1f}, total;dur={total_s * 1000:.1f}"
    return JSONResponse(body, headers={"Server-Timing": timing, "Cache-Control": "no-store"})


async def custom_list(request: Request) -> Response:
    """``POST /v1/vision/custom/list``: the custom models, in CodeProject.AI's shape.

    CodeProject.AI's YOLOv5 module answers ``{"success": true, "models": [...]}`` for its
    ``list-custom`` command (modules/ObjectDetectionYOLOv5-6.2/detect_adapter.py
    ``_list_models``, route in its modulesettings.json, at e3468c831); its server adds the
    system fields. Here the custom models are the ones the inference service serves now
    (its repository index, or its ``GET /v2/models``), the backend's own first; when the
    service cannot be asked, the backend's own. No key is asked: the models' names are no
    secret (a wrong ``/v1/vision/custom/<name>`` names them too).
    """
    started = time.perf_counter()
    answering = answering_of(request)
    backend = api.backend_of(request)
    models = await served_names(backend.models, backend.client)
    body = {"success": True, "models": models,
            **answering.system_fields("list-custom", time.perf_counter() - started)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def ping(request: Request) -> Response:
    """``GET /v1/server/status/ping`` and its older path ``GET /v1/status/ping``.

    CodeProject.AI answers its version there, whatever its modules' state
    (src/server/Controllers/ServerStatusController.cs ``GetPing`` -> ``GetVersion``, a
    ``VersionResponse``: success, code, hostname, message, version; at e3468c831). Here the
    version is this backend's; the inference service's state is on ``/healthz``.
    """
    answering = answering_of(request)
    major, minor, patch = _version_parts(__version__)
    body = {"success": True, "code": 200, "hostname": answering.processed_by,
            "message": __version__,
            "version": {"major": major, "minor": minor, "patch": patch, "preRelease": None,
                        "securityUpdate": False, "build": 0, "file": None,
                        "releaseNotes": None}}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _version_parts(version: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of a version such as ``0.1.0`` or ``1.2rc1``."""
    found = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if found is None:
        return 0, 0, 0
    major, minor, patch = (int(part or 0) for part in found.groups())
    return major, minor, patch
