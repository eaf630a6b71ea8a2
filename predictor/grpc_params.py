"""gRPC request parameters to plain Python values, including the spec's ``double_param``.

KServe 0.21's protobuf lacks ``double_param`` (field 4) and ``uint64_param`` (field 5)
of the Open Inference Protocol's ``InferParameter``. A standard client that sends
``score_threshold`` as a double would otherwise see it silently ignored; here such
values are read back from the message's unknown fields.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from google.protobuf.unknown_fields import UnknownFieldSet

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


def to_python(params: Any) -> dict[str, Any]:
    """Converts a map of ``InferParameter`` (or a plain mapping) to a dict of values."""
    out: dict[str, Any] = {}
    if not params:
        return out
    for key, value in params.items():
        if isinstance(value, Mapping) or not hasattr(value, "WhichOneof"):
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
