"""Open Inference Protocol (V2) REST with the binary tensor extension.

A request is a JSON header followed by the raw tensor bytes; the header's length goes in
``Inference-Header-Content-Length``. Encoded images travel as a ``BYTES`` tensor (each
element prefixed by its 4-byte little-endian length), pixel batches as ``UINT8``. The
client asks for binary outputs but reads JSON outputs too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._exceptions import ServerError
from ._http import HttpRequest, RestCodec, model_version_header, parse_json
from ._images import PreparedImage, encoded_batch, pixel_batch
from ._tensors import (
    INPUT_NAME,
    OUTPUT_NAMES,
    array_from_json,
    array_from_raw,
    pack_bytes,
    results_from_outputs,
)
from ._types import DetectOptions, ImageResult

__all__ = ["HEADER_LENGTH", "V2Codec", "build_infer_body", "parse_infer_body"]

HEADER_LENGTH = "Inference-Header-Content-Length"


class V2Codec(RestCodec):
    """Builds V2 REST requests and reads V2 responses for one model."""

    def infer_request(
        self, images: Sequence[PreparedImage], options: DetectOptions
    ) -> HttpRequest:
        """``POST /v2/models/{name}/infer`` with one binary input tensor."""
        content, header_length = build_infer_body(images, options)
        return HttpRequest(
            "POST",
            f"/v2/models/{self.model}/infer",
            {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)},
            content,
        )

    def infer_response(
        self, headers: Mapping[str, str], content: bytes, images: Sequence[PreparedImage]
    ) -> list[ImageResult]:
        """Per-image results from a 200 response, binary or JSON.

        The model version comes from the body's ``model_version``, else from the
        ``x-model-version`` header.
        """
        length = headers.get(HEADER_LENGTH.lower()) or headers.get(HEADER_LENGTH)
        outputs, version = parse_infer_body(content, int(length) if length else None)
        return results_from_outputs(outputs, [image.size for image in images],
                                    version or model_version_header(headers))


def build_infer_body(
    images: Sequence[PreparedImage], options: DetectOptions
) -> tuple[bytes, int]:
    """The request body and the length of its JSON header."""
    pixels = pixel_batch(images)
    if pixels is not None:
        datatype, shape, raw = "UINT8", list(pixels.shape), pixels.tobytes()
    else:
        encoded = encoded_batch(images)
        datatype, shape, raw = "BYTES", [len(encoded)], pack_bytes(encoded)
    header: dict[str, Any] = {
        "inputs": [{
            "name": INPUT_NAME,
            "datatype": datatype,
            "shape": shape,
            "parameters": {"binary_data_size": len(raw)},
        }],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUT_NAMES],
    }
    parameters: dict[str, Any] = {"binary_data_output": True, **options.v2_parameters()}
    header["parameters"] = parameters
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return head + raw, len(head)


def parse_infer_body(content: bytes, header_length: int | None
                     ) -> tuple[dict[str, np.ndarray], str | None]:
    """Output tensors by name, and the ``model_version`` (None if absent), from a body.

    Args:
        content: The body.
        header_length: ``Inference-Header-Content-Length``; None for a JSON-only body.
    """
    if header_length is None:
        header_length = len(content)
    if not 0 < header_length <= len(content):
        raise ServerError(
            f"infer: {HEADER_LENGTH} is {header_length} but the body has {len(content)} bytes"
        )
    header = parse_json(content[:header_length], "infer")
    items = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(items, list):
        raise ServerError("infer: the server's response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    pos = header_length
    for item in items:
        try:
            name, datatype = str(item["name"]), str(item["datatype"])
            shape = [int(d) for d in item["shape"]]
            params = item.get("parameters") or {}
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"infer: an output in the response is malformed ({exc!r})") from None
        size = params.get("binary_data_size")
        if size is not None:
            end = pos + int(size)
            if end > len(content):
                raise ServerError(f"infer: output {name!r} runs past the end of the body")
            outputs[name] = array_from_raw(content[pos:end], datatype, shape)
            pos = end
        else:
            outputs[name] = array_from_json(item.get("data", []), datatype, shape)
    version = header.get("model_version")
    return outputs, str(version) if version not in (None, "") else None
