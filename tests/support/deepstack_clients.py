"""Three products' DeepStack calls, written from their public documentation and source,
so the web backend's DeepStack API is tested the way those products use it.

What each one sends, reads, and does on an error (the files read are named; nothing is
copied from them):

- DeepStack's Python SDK (robmarkcole/deepstack-python, ``deepstack/core.py``; the
  request as DeepStack's docs show it, ``object-detection/index.rst``): POSTs the picture
  in the multipart ``image`` field with ``api_key`` and ``min_confidence`` form fields to
  ``/v1/vision/detection`` (``/v1/vision/custom/<model>`` for a custom model). On 200 it
  returns ``body["predictions"]``; on 404 it raises "bad URL"; any other status raises
  with the status; a timeout or refused connection raises too.
- Frigate's ``deepstack`` detector (blakeblackshear/frigate,
  ``frigate/detectors/plugins/deepstack.py``): JPEG-encodes the frame with PIL's
  defaults and POSTs ``image`` and ``api_key`` (no ``min_confidence``) with a 0.1 s
  timeout. A request exception means no detections; otherwise it parses the body as JSON
  whatever the status, and no ``predictions`` key means no detections. It walks the
  predictions in order and stops at the first one under 0.4 or with a label its labelmap
  lacks ("truck" counts as "car"), filling at most 20 rows of ``[label index,
  confidence, y_min/h, x_min/w, y_max/h, x_max/w]``.
- Home Assistant's DeepStack object integration (robmarkcole/HASS-Deepstack-object,
  ``custom_components/deepstack_object/image_processing.py``; its CodeProject.AI twin in
  ``custom_components/codeproject_ai_object`` reads the same fields): calls the SDK with
  ``min_confidence`` 0.1; on the SDK's error it logs it and keeps no objects. Each
  prediction becomes a box relative to the picture's size (3 decimals), its centroid, a
  confidence in percent, its name and type (person, animal, vehicle, other); a target
  (a name or a type) is found when its confidence in percent is above the target's and
  its centroid lies in the region of interest.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import requests
from PIL import Image

__all__ = ["FRIGATE_ROWS", "DeepStackError", "frigate_detect", "frigate_jpeg",
           "home_assistant_objects", "sdk_detect"]

FRIGATE_ROWS = 20
_FRIGATE_MIN_CONFIDENCE = 0.4
_HA_MIN_CONFIDENCE = 0.1
_ANIMALS = {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
            "giraffe"}
_VEHICLES = {"bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"}


class DeepStackError(Exception):
    """What the SDK raises when a call fails."""


def sdk_detect(host: str, port: int, image: bytes, *, api_key: str = "",
               min_confidence: float = 0.45, timeout: float = 10.0,
               custom_model: str = "") -> list[dict[str, Any]]:
    """DeepStack's SDK: ``DeepstackObject(...).detect(image)``; the predictions."""
    path = f"/v1/vision/custom/{custom_model}" if custom_model else "/v1/vision/detection"
    url = f"http://{host}:{port}{path}"
    try:
        response = requests.post(url, files={"image": image},
                                 data={"api_key": api_key, "min_confidence": min_confidence},
                                 timeout=timeout)
    except requests.exceptions.Timeout:
        raise DeepStackError(f"timeout after {timeout} s; try a longer timeout") from None
    except requests.exceptions.ConnectionError as exc:
        raise DeepStackError(f"connection error, check the address and port: {exc}") from None
    if response.status_code == 200:
        predictions: list[dict[str, Any]] = response.json()["predictions"]
        return predictions
    if response.status_code == 404:
        raise DeepStackError(f"bad URL {url} (404)")
    raise DeepStackError(f"error from DeepStack, status {response.status_code}")


def frigate_jpeg(frame: np.ndarray) -> bytes:
    """The JPEG Frigate sends for a frame: PIL's defaults."""
    out = io.BytesIO()
    Image.fromarray(frame.astype(np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _frigate_label(labelmap: Mapping[int, str], label: str) -> int:
    wanted = "car" if label.lower() == "truck" else label.lower()
    return next((index for index, name in labelmap.items() if name == wanted), -1)


def frigate_detect(api_url: str, frame: np.ndarray, labelmap: Mapping[int, str], *,
                   api_key: str = "", timeout: float = 0.1,
                   session: requests.Session | None = None) -> np.ndarray:
    """Frigate's detector: ``detect_raw(frame)``, the 20 x 6 rows it hands on."""
    height, width = frame.shape[:2]
    rows = np.zeros((FRIGATE_ROWS, 6), np.float32)
    try:
        response = (session or requests).post(api_url, data={"api_key": api_key},
                                              files={"image": frigate_jpeg(frame)},
                                              timeout=timeout)
    except requests.exceptions.RequestException:
        return rows
    body = response.json()  # an answer that is not JSON raises, as in Frigate
    if body.get("predictions") is None:
        return rows
    for i, prediction in enumerate(body["predictions"]):
        if prediction["confidence"] < _FRIGATE_MIN_CONFIDENCE:
            break
        index = _frigate_label(labelmap, prediction["label"])
        if index < 0:
            break
        rows[i] = [index, float(prediction["confidence"]), prediction["y_min"] / height,
                   prediction["x_min"] / width, prediction["y_max"] / height,
                   prediction["x_max"] / width]
    return rows


def _object_type(name: str) -> str:
    if name == "person":
        return "person"
    if name in _ANIMALS:
        return "animal"
    return "vehicle" if name in _VEHICLES else "other"


def _ha_object(prediction: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    box = {"x_min": round(prediction["x_min"] / width, 3),
           "y_min": round(prediction["y_min"] / height, 3),
           "x_max": round(prediction["x_max"] / width, 3),
           "y_max": round(prediction["y_max"] / height, 3),
           "width": round((prediction["x_max"] - prediction["x_min"]) / width, 3),
           "height": round((prediction["y_max"] - prediction["y_min"]) / height, 3)}
    centroid = {"x": round(box["x_min"] + box["width"] / 2, 3),
                "y": round(box["y_min"] + box["height"] / 2, 3)}
    return {"name": prediction["label"], "object_type": _object_type(prediction["label"]),
            "confidence": round(prediction["confidence"] * 100, 3), "bounding_box": box,
            "centroid": centroid}


def home_assistant_objects(host: str, port: int, image: bytes,
                           targets: Sequence[Mapping[str, Any]], *, api_key: str = "",
                           timeout: float = 10.0, custom_model: str = "",
                           roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Home Assistant's ``process_image``: (every object, the targets found).

    Args:
        targets: ``{"target": name or type, "confidence": percent}`` each.
        roi: ``(y_min, x_min, y_max, x_max)`` relative to the picture.
    """
    try:
        predictions = sdk_detect(host, port, image, api_key=api_key, timeout=timeout,
                                 min_confidence=_HA_MIN_CONFIDENCE, custom_model=custom_model)
    except DeepStackError:
        return [], []  # the integration logs the error and keeps no objects
    width, height = Image.open(io.BytesIO(image)).size
    objects = [_ha_object(p, width, height) for p in predictions]
    found = []
    for obj in objects:
        wanted = [t for t in targets if t["target"] in (obj["name"], obj["object_type"])]
        if not wanted:
            continue
        # A target named after the object wins over one named after its type.
        named = [t for t in wanted if t["target"] == obj["name"]]
        confidence = (named or wanted)[-1]["confidence"]
        y_min, x_min, y_max, x_max = roi
        inside = (x_min <= obj["centroid"]["x"] <= x_max
                  and y_min <= obj["centroid"]["y"] <= y_max)
        if obj["confidence"] > confidence and inside:
            found.append(obj)
    return objects, found
