"""Open Inference Protocol tensors, shared by V2 REST and gRPC. Pure functions.

The server answers a batch of ``B`` images with five outputs, padded to the largest
number of detections ``K`` in the batch: ``detection_boxes`` FP32 ``[B, K, 4]``,
``detection_scores`` FP32 ``[B, K]``, ``detection_classes`` INT32 ``[B, K]``,
``detection_labels`` BYTES ``[B, K]`` and ``num_detections`` INT32 ``[B]``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._exceptions import ServerError
from ._types import Detection, ImageResult

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "array_from_json",
    "array_from_raw",
    "pack_bytes",
    "results_from_outputs",
    "unpack_bytes",
]

INPUT_NAME = "image"
OUTPUT_NAMES = (
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_labels",
    "num_detections",
)

# Little-endian, as the protocol requires for raw tensor contents.
_DTYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def pack_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements in raw form: each one prefixed by its 4-byte little-endian length."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def unpack_bytes(raw: bytes) -> list[bytes]:
    """The inverse of :func:`pack_bytes`; raises ServerError on a truncated buffer."""
    out: list[bytes] = []
    pos = 0
    view = memoryview(raw)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ServerError("malformed BYTES tensor from the server: truncated length")
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + size > len(raw):
            raise ServerError("malformed BYTES tensor from the server: truncated element")
        out.append(bytes(view[pos:pos + size]))
        pos += size
    return out


def array_from_raw(raw: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """A tensor from its raw bytes; BYTES tensors come back as an object array of bytes."""
    dims = tuple(int(d) for d in shape)
    count = int(np.prod(dims)) if dims else 1
    if datatype == "BYTES":
        items = unpack_bytes(raw)
        if len(items) != count:
            raise ServerError(
                f"BYTES tensor of shape {list(dims)} holds {len(items)} elements, not {count}"
            )
        flat = np.empty(count, dtype=object)
        flat[:] = items
        return flat.reshape(dims)
    if datatype not in _DTYPES:
        raise ServerError(f"the server sent a tensor of unknown datatype {datatype!r}")
    dtype = np.dtype(_DTYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise ServerError(
            f"{datatype} tensor of shape {list(dims)} has {len(raw)} bytes, "
            f"not {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def array_from_json(data: Any, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """A tensor from the JSON ``data`` field (flat or nested, row-major)."""
    dims = tuple(int(d) for d in shape)
    if datatype == "BYTES":
        flat = np.empty(int(np.prod(dims)) if dims else 1, dtype=object)
        values = list(_flatten(data))
        if len(values) != flat.size:
            raise ServerError(f"BYTES tensor of shape {list(dims)} holds {len(values)} elements")
        flat[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        return flat.reshape(dims)
    if datatype not in _DTYPES:
        raise ServerError(f"the server sent a tensor of unknown datatype {datatype!r}")
    try:
        return np.asarray(list(_flatten(data)), dtype=np.dtype(_DTYPES[datatype])).reshape(dims)
    except (TypeError, ValueError) as exc:
        raise ServerError(f"{datatype} tensor of shape {list(dims)} is malformed: {exc}") from None


def results_from_outputs(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[tuple[int, int]],
    model_version: str | None = None,
) -> list[ImageResult]:
    """Per-image results from the five output tensors of a batch of ``len(sizes)`` images.

    ``model_version`` is the response's own (None or ``""`` when it named none).
    """
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise ServerError(f"the response lacks the output(s) {', '.join(missing)}")
    batch = len(sizes)
    boxes = np.asarray(outputs["detection_boxes"], dtype=np.float64)
    scores = np.asarray(outputs["detection_scores"], dtype=np.float64)
    classes = np.asarray(outputs["detection_classes"]).astype(np.int64)
    labels = outputs["detection_labels"]
    counts = np.asarray(outputs["num_detections"]).astype(np.int64).reshape(-1)
    k = scores.shape[1] if scores.ndim == 2 else -1
    if (counts.shape != (batch,) or scores.shape != (batch, k)
            or boxes.shape != (batch, k, 4) or classes.shape != (batch, k)
            or tuple(labels.shape) != (batch, k)):
        raise ServerError(
            f"the response's output shapes do not fit a batch of {batch}: boxes "
            f"{list(boxes.shape)}, scores {list(scores.shape)}, classes {list(classes.shape)}, "
            f"labels {list(labels.shape)}, num_detections {list(counts.shape)}"
        )
    results = []
    for i in range(batch):
        n = int(counts[i])
        if not 0 <= n <= k:
            raise ServerError(f"num_detections[{i}] = {n} is outside 0..{k}")
        detections = tuple(
            Detection(
                box=(float(boxes[i, j, 0]), float(boxes[i, j, 1]),
                     float(boxes[i, j, 2]), float(boxes[i, j, 3])),
                score=float(scores[i, j]),
                label=_text(labels[i, j]),
                label_id=int(classes[i, j]),
            )
            for j in range(n)
        )
        results.append(ImageResult(detections=detections, image_size=sizes[i],
                                   model_version=model_version or None))
    return results


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, (list, tuple)):
        for item in data:
            yield from _flatten(item)
    else:
        yield data
