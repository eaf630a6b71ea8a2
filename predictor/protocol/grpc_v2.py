"""The gRPC wire: ``ModelInferRequest`` to :class:`Request`, V2 answers to ``ModelInferResponse``.

Two gaps of KServe 0.21 are closed here. Its protobuf lacks the spec's ``double_param``
(field 4) and ``uint64_param`` (field 5) of ``InferParameter``, so a standard client's
float ``score_threshold`` would be dropped silently: such values are read back from the
message's unknown fields. And answers are always raw (``raw_output_contents``), which is
where standard clients read them, holding only the outputs the request named.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.unknown_fields import UnknownFieldSet
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from .errors import RequestError
from .messages import OutputRequest, Request, Tensor, V2Answer, V2Call
from .v2 import check_outputs, image_input, image_sources, tensor_bytes

_DOUBLE_FIELD = 4
_UINT64_FIELD = 5
_WIRE_VARINT = 0
_WIRE_FIXED64 = 1


def _unknown_value(message: Any) -> Any:
    for field in UnknownFieldSet(message):
        if field.field_number == _DOUBLE_FIELD and field.wire_type == _WIRE_FIXED64:
            return struct.unpack("<d", struct.pack("<Q", field.data))[0]
        if field.field_number == _UINT64_FIELD and field.wire_type == _WIRE_VARINT:
            return int(field.data)
    return None


def parameters(params: Any) -> dict[str, Any]:
    """A map of ``InferParameter`` (or a plain mapping) to a dict of Python values."""
    out: dict[str, Any] = {}
    if not params:
        return out
    for key, value in params.items():
        if not hasattr(value, "WhichOneof"):
            out[key] = value
            continue
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
        else:
            unknown = _unknown_value(value)
            if unknown is not None:
                out[key] = unknown
    return out


def _contents(datatype: str, contents: Any) -> list[Any]:
    if datatype == "BYTES":
        return list(contents.bytes_contents)
    if datatype in ("UINT8", "UINT16", "UINT32"):
        return list(contents.uint_contents)
    if datatype in ("INT8", "INT16", "INT32"):
        return list(contents.int_contents)
    return []


def parse_infer_request(request: Any, *, max_images: int, max_pixels: int) -> Request:
    """A ``ModelInferRequest`` to the images and options it carries."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"the request has {len(request.inputs)} inputs but "
                           f"{len(raw)} raw_input_contents")
    inputs = []
    for i, spec in enumerate(request.inputs):
        if raw and spec.HasField("contents"):
            raise RequestError(f"input '{spec.name}' has both contents and raw_input_contents")
        datatype = spec.datatype.upper()
        inputs.append(Tensor(spec.name, spec.datatype, tuple(int(s) for s in spec.shape),
                             data=None if raw else _contents(datatype, spec.contents),
                             raw=raw[i] if raw else None))
    outputs = tuple(OutputRequest(o.name) for o in request.outputs) or None
    check_outputs(outputs)
    call = V2Call(id=request.id, outputs=outputs, binary_outputs=True)
    sources = image_sources(image_input(inputs), max_images, max_pixels)
    return Request(sources, parameters(request.parameters), call)


def encode_infer_response(answer: V2Answer, model_name: str, model_version: str) -> Any:
    """A V2 answer as a ``ModelInferResponse`` with every output in ``raw_output_contents``."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version,
                                     id=answer.id)
    for out in answer.outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.array.shape))
        response.raw_output_contents.append(tensor_bytes(out.datatype, out.array))
    return response
