"""Open Inference Protocol (V2) tensors, for REST and gRPC alike.

In: one input ``image``, either ``BYTES [B]`` of encoded image files or ``UINT8
[B, H, W, 3]`` RGB pixels. Out: five detection tensors padded to the most detections
of any image in the request (``K``), the rows past ``num_detections[i]`` being padding.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..pipeline.decode import ImageSource
from ..pipeline.detections import Detections
from .b64 import b64decode
from .errors import RequestError, check_count
from .messages import OutputRequest, OutputTensor, Tensor, V2Answer, V2Call

INPUT_NAME = "image"

# (name, datatype, shape with -1 for variable dims); the model metadata lists these.
OUTPUTS: tuple[tuple[str, str, list[int]], ...] = (
    ("detection_boxes", "FP32", [-1, -1, 4]),
    ("detection_scores", "FP32", [-1, -1]),
    ("detection_classes", "INT32", [-1, -1]),
    ("detection_labels", "BYTES", [-1, -1]),
    ("num_detections", "INT32", [-1]),
)
OUTPUT_NAMES = tuple(name for name, _, _ in OUTPUTS)


def check_outputs(outputs: Sequence[OutputRequest] | None) -> None:
    """Refuses an unknown output name before any model time is spent."""
    for out in outputs or ():
        if out.name not in OUTPUT_NAMES:
            raise RequestError(f"unknown output '{out.name}'; outputs are "
                               f"{', '.join(sorted(OUTPUT_NAMES))}")


def check_id(value: Any) -> str:
    """The request ``id``: a string when present (the spec's type)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(f'"id" must be a string, got {type(value).__name__} {value!r}')
    return value


def image_input(inputs: Sequence[Tensor]) -> Tensor:
    """The ``image`` input; a request with a single input of another name is read as it."""
    named = [t for t in inputs if t.name == INPUT_NAME]
    if not named and len(inputs) == 1:
        named = list(inputs)
    if len(named) != 1:
        names = ", ".join(t.name for t in inputs) or "none"
        raise RequestError(f"expected one input named '{INPUT_NAME}', got: {names}")
    return named[0]


def split_bytes_tensor(raw: bytes, count: int, where: str) -> list[bytes]:
    """Splits a binary BYTES tensor: each element is a 4-byte LE length, then the bytes."""
    out: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(f"{where}: BYTES tensor ends inside an element's length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise RequestError(f"{where}: BYTES element {len(out)} declares {length} bytes "
                               f"but only {len(raw) - offset} remain")
        out.append(bytes(view[offset:offset + length]))
        offset += length
    if len(out) != count:
        raise RequestError(f"{where}: BYTES tensor holds {len(out)} elements; "
                           f"its shape says {count}")
    return out


def _bytes_elements(data: Any, raw: bytes | None, count: int, where: str) -> list[bytes]:
    if raw is not None:
        return split_bytes_tensor(raw, count, where)
    if isinstance(data, np.ndarray):
        data = data.reshape(-1).tolist()
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise RequestError(f"{where}: BYTES data must be a list, got {type(data).__name__}")
    flat: list[Any] = []
    for element in data:  # JSON clients may nest per the shape
        flat.extend(element if isinstance(element, list) else [element])
    if len(flat) != count:
        raise RequestError(f"{where}: holds {len(flat)} elements; its shape says {count}")
    out = []
    for i, element in enumerate(flat):
        if isinstance(element, (bytes, bytearray)):  # gRPC bytes_contents: raw files
            out.append(bytes(element))
        elif isinstance(element, str):  # JSON: base64 text
            out.append(b64decode(element, f"{where}[{i}]"))
        else:
            raise RequestError(
                f"{where}[{i}]: expected a base64 string, got {type(element).__name__}")
    return out


def _uint8_array(data: Any, raw: bytes | None, shape: list[int], where: str) -> np.ndarray:
    expected = int(np.prod(shape))
    if raw is not None:
        if len(raw) != expected:
            raise RequestError(f"{where}: holds {len(raw)} bytes; shape {shape} needs {expected}")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"{where}: UINT8 data must be a list of integers") from exc
    # Casting would silently turn 0..1 floats (normalised pixels) into a black image.
    if array.dtype.kind not in "iu" and not (
            array.dtype.kind == "f" and np.isfinite(array).all()
            and (array == np.floor(array)).all()):
        raise RequestError(f"{where}: UINT8 data must be integers between 0 and 255")
    array = array.reshape(-1)
    if array.size != expected:
        raise RequestError(f"{where}: holds {array.size} values; shape {shape} needs {expected}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise RequestError(f"{where}: UINT8 values must be between 0 and 255")
    return array.astype(np.uint8).reshape(shape)


def image_sources(tensor: Tensor, max_images: int, max_pixels: int) -> list[ImageSource]:
    """The images of the ``image`` input: encoded files (BYTES) or pixel arrays (UINT8)."""
    where = f"input '{tensor.name}'"
    shape = [int(s) for s in tensor.shape]
    if any(s < 0 for s in shape):
        raise RequestError(f"{where}: shape {shape} has a negative dimension")
    datatype = tensor.datatype.upper()
    if datatype == "BYTES":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(f"{where}: BYTES input has shape {shape}; expected [B]")
        check_count(shape[0], max_images, where)
        return list(_bytes_elements(tensor.data, tensor.raw, shape[0], where))
    if datatype == "UINT8":
        if len(shape) != 4 or shape[3] != 3:
            raise RequestError(f"{where}: UINT8 input has shape {shape}; expected [B, H, W, 3]")
        check_count(shape[0], max_images, where)
        if shape[1] * shape[2] > max_pixels:
            raise RequestError(f"{where}: images are {shape[2]}x{shape[1]} pixels; the limit "
                               f"is {max_pixels / 1e6:g} megapixels (--max_image_pixels)")
        array = _uint8_array(tensor.data, tensor.raw, shape, where)
        return [np.ascontiguousarray(array[i]) for i in range(shape[0])]
    raise RequestError(f"{where} has datatype {datatype}; expected BYTES (encoded images) or "
                       f"UINT8 [B, H, W, 3] (RGB pixels)")


def tensor_bytes(datatype: str, array: np.ndarray) -> bytes:
    """A tensor's raw bytes: little-endian values, or length-prefixed elements for BYTES."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def detection_tensors(batch: Sequence[Detections]) -> dict[str, np.ndarray]:
    """A batch of detections as the five padded output tensors."""
    count = len(batch)
    k = max((len(d.scores) for d in batch), default=0)
    boxes = np.zeros((count, k, 4), dtype=np.float32)
    scores = np.zeros((count, k), dtype=np.float32)
    classes = np.full((count, k), -1, dtype=np.int32)
    labels = np.full((count, k), b"", dtype=np.object_)
    num = np.zeros((count,), dtype=np.int32)
    for i, det in enumerate(batch):
        n = len(det.scores)
        num[i] = n
        boxes[i, :n] = det.boxes
        scores[i, :n] = det.scores
        classes[i, :n] = det.label_ids
        for j, name in enumerate(det.names):
            labels[i, j] = name.encode("utf-8")
    return {"detection_boxes": boxes, "detection_scores": scores,
            "detection_classes": classes, "detection_labels": labels, "num_detections": num}


def answer(call: V2Call, batch: Sequence[Detections]) -> V2Answer:
    """The outputs the request asked for (all five by default), in the order it asked."""
    tensors = detection_tensors(batch)
    datatypes = {name: datatype for name, datatype, _ in OUTPUTS}
    wanted = call.outputs if call.outputs else tuple(OutputRequest(n) for n in OUTPUT_NAMES)
    outputs = tuple(
        OutputTensor(out.name, datatypes[out.name], tensors[out.name],
                     call.binary_outputs if out.binary is None else out.binary)
        for out in wanted)
    return V2Answer(call.id, outputs)
