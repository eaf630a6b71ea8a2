"""KServe V1 REST: base64 images in JSON ``instances``, detections in ``predictions``."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._exceptions import ServerError
from ._http import HttpRequest, RestCodec, model_version_header, parse_json
from ._images import PreparedImage, encoded_batch
from ._types import Detection, DetectOptions, ImageResult

__all__ = ["V1Codec"]


class V1Codec(RestCodec):
    """Builds V1 requests and reads V1 responses for one model."""

    ready_path_template = "/v1/models/{model}"

    def infer_request(
        self, images: Sequence[PreparedImage], options: DetectOptions
    ) -> HttpRequest:
        """``POST /v1/models/{name}:predict`` with one instance per image."""
        body: dict[str, Any] = {
            "instances": [
                {"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}}
                for data in encoded_batch(images)
            ]
        }
        parameters = options.v1_parameters()
        if parameters:
            body["parameters"] = parameters
        return HttpRequest(
            "POST",
            f"/v1/models/{self.model}:predict",
            {"Content-Type": "application/json"},
            json.dumps(body).encode("utf-8"),
        )

    def infer_response(
        self, headers: Mapping[str, str], content: bytes, images: Sequence[PreparedImage]
    ) -> list[ImageResult]:
        """The ``predictions`` of a 200 response, one result per image sent.

        The model version comes from the ``x-model-version`` header.
        """
        body = parse_json(content, "infer")
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(images):
            count = len(predictions) if isinstance(predictions, list) else "no"
            raise ServerError(
                f"infer: expected {len(images)} predictions from the server, got {count}"
            )
        version = model_version_header(headers)
        return [parse_prediction(item, image.size, version)
                for item, image in zip(predictions, images, strict=True)]


def parse_prediction(item: Any, fallback_size: tuple[int, int],
                     model_version: str | None = None) -> ImageResult:
    """One ``predictions`` element: ``{"detections": [...], "image_size": [h, w]}``."""
    try:
        detections = tuple(
            Detection(
                box=(float(d["box"][0]), float(d["box"][1]),
                     float(d["box"][2]), float(d["box"][3])),
                score=float(d["score"]),
                label=str(d.get("label", "")),
                label_id=int(d.get("label_id", -1)),
            )
            for d in item["detections"]
        )
        size = item.get("image_size")
        image_size = (int(size[0]), int(size[1])) if size else fallback_size
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ServerError(f"infer: a prediction from the server is malformed ({exc!r})") from None
    return ImageResult(detections=detections, image_size=image_size,
                       model_version=model_version)
