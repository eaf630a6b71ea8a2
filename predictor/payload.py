"""Request bodies to image sources: the V1 JSON, raw image bodies and V2 input tensors.

Every accepted request form is parsed here and nowhere else. The result is a list of
image sources (encoded ``bytes`` to decode, or an ``H x W x 3`` uint8 array) plus the
request's parameters. Errors are :class:`~predictor.decode.DecodeError` naming the
instance and the problem.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decode import DecodeError, b64decode

ImageSource = bytes | np.ndarray
INPUT_NAME = "image"


@dataclass(frozen=True)
class Parsed:
    """What a request carries, independent of its protocol."""

    sources: list[ImageSource]
    parameters: Mapping[str, Any] = field(default_factory=dict)


def _check_count(count: int, limit: int, what: str) -> None:
    if count == 0:
        raise DecodeError(f"{what} is empty; send at least one image")
    if count > limit:
        raise DecodeError(
            f"{what} has {count} images; the limit is {limit} per request "
            f"(--max_images_per_request)"
        )


def _instance_bytes(instance: Any, where: str) -> bytes:
    value = instance
    if isinstance(instance, Mapping):
        for key in ("image_bytes", "image", "b64"):
            if key in instance:
                value = instance[key] if key != "b64" else {"b64": instance["b64"]}
                break
        else:
            keys = ", ".join(sorted(map(str, instance))) or "none"
            raise DecodeError(
                f"{where}: no image found (keys: {keys}); send "
                f'{{"image_bytes": {{"b64": "<base64 image>"}}}}'
            )
    if isinstance(value, Mapping):
        if "b64" not in value:
            raise DecodeError(f'{where}: expected {{"b64": "<base64 image>"}}')
        value = value["b64"]
    if not isinstance(value, str):
        raise DecodeError(
            f"{where}: expected a base64 string, got {type(value).__name__}"
        )
    return b64decode(value, where)


def parse_v1(body: Any, max_images: int) -> Parsed:
    """Parses a V1 ``:predict`` body: JSON instances, or a raw image file as ``bytes``."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return Parsed([bytes(body)])
    if not isinstance(body, Mapping):
        raise DecodeError(
            f"request body must be a JSON object with \"instances\", got {type(body).__name__}"
        )
    instances = body.get("instances", body.get("inputs"))
    if instances is None:
        raise DecodeError('request body has no "instances" list')
    if not isinstance(instances, list):
        raise DecodeError(f'"instances" must be a list, got {type(instances).__name__}')
    _check_count(len(instances), max_images, '"instances"')
    sources: list[ImageSource] = [
        _instance_bytes(inst, f"instances[{i}]") for i, inst in enumerate(instances)
    ]
    params = body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise DecodeError(f'"parameters" must be an object, got {type(params).__name__}')
    return Parsed(sources, params)


def split_bytes_tensor(raw: bytes, count: int, where: str) -> list[bytes]:
    """Splits a V2 binary BYTES tensor: each element is a 4-byte LE length, then the bytes."""
    out: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise DecodeError(f"{where}: BYTES tensor ends inside an element's length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise DecodeError(
                f"{where}: BYTES element {len(out)} declares {length} bytes but only "
                f"{len(raw) - offset} remain"
            )
        out.append(bytes(view[offset:offset + length]))
        offset += length
    if len(out) != count:
        raise DecodeError(
            f"{where}: BYTES tensor holds {len(out)} elements; its shape says {count}"
        )
    return out


def _bytes_elements(data: Any, raw: bytes | None, count: int, where: str) -> list[bytes]:
    if raw is not None:
        return split_bytes_tensor(raw, count, where)
    if isinstance(data, np.ndarray):
        data = data.reshape(-1).tolist()
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise DecodeError(f"{where}: BYTES data must be a list, got {type(data).__name__}")
    flat: list[Any] = []
    for element in data:  # JSON clients may nest per the shape
        flat.extend(element if isinstance(element, list) else [element])
    if len(flat) != count:
        raise DecodeError(f"{where}: holds {len(flat)} elements; its shape says {count}")
    out = []
    for i, element in enumerate(flat):
        if isinstance(element, (bytes, bytearray)):  # gRPC bytes_contents: raw files
            out.append(bytes(element))
        elif isinstance(element, str):  # JSON: base64 text
            out.append(b64decode(element, f"{where}[{i}]"))
        else:
            raise DecodeError(
                f"{where}[{i}]: expected a base64 string, got {type(element).__name__}"
            )
    return out


def _uint8_images(array: np.ndarray, where: str) -> list[ImageSource]:
    if array.ndim != 4 or array.shape[3] != 3:
        raise DecodeError(
            f"{where}: UINT8 input has shape {list(array.shape)}; expected [B, H, W, 3] RGB"
        )
    return [np.ascontiguousarray(array[i]) for i in range(array.shape[0])]


def parse_v2_input(
    name: str, datatype: str, shape: Sequence[int], data: Any, raw: bytes | None,
    max_images: int, max_pixels: int,
) -> list[ImageSource]:
    """Parses the V2 ``image`` input (BYTES of encoded files, or UINT8 pixels)."""
    where = f"input '{name}'"
    shape = [int(s) for s in shape]
    if any(s < 0 for s in shape):
        raise DecodeError(f"{where}: shape {shape} has a negative dimension")
    datatype = datatype.upper()
    if datatype == "BYTES":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise DecodeError(f"{where}: BYTES input has shape {shape}; expected [B]")
        _check_count(shape[0], max_images, where)
        return list(_bytes_elements(data, raw, shape[0], where))
    if datatype == "UINT8":
        if len(shape) != 4 or shape[3] != 3:
            raise DecodeError(f"{where}: UINT8 input has shape {shape}; expected [B, H, W, 3]")
        _check_count(shape[0], max_images, where)
        if shape[1] * shape[2] > max_pixels:
            raise DecodeError(
                f"{where}: images are {shape[2]}x{shape[1]} pixels; the limit is "
                f"{max_pixels / 1e6:g} megapixels (--max_image_pixels)"
            )
        expected = int(np.prod(shape))
        if raw is not None:
            if len(raw) != expected:
                raise DecodeError(
                    f"{where}: holds {len(raw)} bytes; shape {shape} needs {expected}"
                )
            array = np.frombuffer(raw, dtype=np.uint8)
        else:
            try:
                array = np.asarray(data)
            except (TypeError, ValueError) as exc:
                raise DecodeError(f"{where}: UINT8 data must be a list of integers") from exc
            # Casting would silently turn 0..1 floats (normalised pixels) into a black image.
            if array.dtype.kind not in "iu" and not (
                    array.dtype.kind == "f" and np.isfinite(array).all()
                    and (array == np.floor(array)).all()):
                raise DecodeError(f"{where}: UINT8 data must be integers between 0 and 255")
            array = array.reshape(-1)
            if array.size != expected:
                raise DecodeError(f"{where}: holds {array.size} values; shape {shape} "
                                  f"needs {expected}")
            if array.size and (array.min() < 0 or array.max() > 255):
                raise DecodeError(f"{where}: UINT8 values must be between 0 and 255")
            array = array.astype(np.uint8)
        return _uint8_images(array.reshape(shape), where)
    raise DecodeError(
        f"{where} has datatype {datatype}; expected BYTES (encoded images) or UINT8 "
        f"[B, H, W, 3] (RGB pixels)"
    )
