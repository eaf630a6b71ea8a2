"""The REST wire: request bodies to :class:`Request`, V2 answers to response bodies.

- V1: the body's *content* decides. A body that starts with an image file's signature
  is one image, whatever its ``Content-Type``; anything else is read as JSON, whatever
  the media type's parameters (``application/json; charset=utf-8``, ``text/plain``).
- V2: JSON, or JSON followed by binary tensors when ``Inference-Header-Content-Length``
  is set (the binary tensor extension). Parsed here rather than by KServe's pydantic
  model, which refuses list-valued parameters and breaks on binary BYTES.
- Answers: JSON, or binary outputs after the JSON header when the request asked.
- :class:`Inflater`: ``Content-Encoding: gzip`` / ``deflate`` bodies, inflated with the
  body limit applied to the inflated size as it grows.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson

from .errors import RequestError
from .messages import OutputRequest, OutputTensor, Request, Tensor, V2Answer, V2Call
from .v1 import parse_v1
from .v2 import check_id, check_outputs, image_input, image_sources, tensor_bytes

HEADER_LENGTH = "inference-header-content-length"

# Leading bytes of the image files a client may send as a raw body.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
               b"II*\x00", b"MM\x00*")


def looks_like_image(body: bytes) -> bool:
    """True when ``body`` starts like an image file (JPEG, PNG, GIF, BMP, TIFF, WebP)."""
    return body.startswith(_SIGNATURES) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP")


def media_type(content_type: str | None) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_json(body: bytes, what: str = "request body") -> Any:
    """JSON in UTF-8 (or UTF-16/32 with a BOM, which ``json`` detects)."""
    if not body.strip():
        raise RequestError(f"{what} is empty; send a JSON inference request")
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from exc
    except json.JSONDecodeError as exc:
        raise RequestError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} "
                           f"column {exc.colno})") from exc
    except RecursionError as exc:
        raise RequestError(f"{what} nests too deeply to be an inference request") from exc


def parse_v1_body(body: bytes, content_type: str | None, max_images: int) -> Request:
    """A V1 ``:predict`` body: an image file, or JSON instances."""
    if looks_like_image(body):
        return parse_v1(body, max_images)
    kind = media_type(content_type)
    try:
        document = parse_json(body)
    except RequestError:
        if kind.startswith("image/"):
            return parse_v1(body, max_images)  # decoding will say what is wrong with the file
        said_json = kind in ("application/json", "text/json") or kind.endswith("+json")
        if said_json or not body.strip() or body.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] in b"{[":
            raise
        raise RequestError(
            f"request body is neither JSON nor an image file (content type {kind or 'none'}, "
            f"{len(body)} bytes); send {{\"instances\": [...]}} as JSON, or a JPEG, PNG, "
            f"WebP, BMP or GIF file as the body") from None
    return parse_v1(document, max_images)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise RequestError(f"{where}: shape must be a list of integers")
    return tuple(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{where} must be true or false, got {value!r}")
    return value


def _outputs(value: Any) -> tuple[OutputRequest, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in value):
        raise RequestError('"outputs" must be a list of objects with a "name"')
    outputs = []
    for o in value:
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(f"outputs '{o['name']}': parameters must be an object")
        binary = params.get("binary_data")
        outputs.append(OutputRequest(o["name"], None if binary is None else _flag(
            binary, f"outputs '{o['name']}': binary_data")))
    check_outputs(outputs)
    return tuple(outputs) or None


def parse_v2_body(body: bytes, header_length: str | None, *, max_images: int,
                  max_pixels: int) -> Request:
    """A V2 ``/infer`` body: JSON, or JSON then binary tensors (``header_length`` set)."""
    if header_length is None:
        json_length = len(body)
    else:
        try:
            json_length = int(header_length)
        except ValueError as exc:
            raise RequestError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") \
                from exc
        if not 0 < json_length <= len(body):
            raise RequestError(f"{HEADER_LENGTH} is {json_length}, but the body has "
                               f"{len(body)} bytes")
    header = parse_json(body[:json_length], "the JSON part of the request")
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError('the request needs an "inputs" list')
    call = V2Call(id=check_id(header.get("id")), outputs=_outputs(header.get("outputs")))
    params = header.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RequestError('"parameters" must be an object')
    if "binary_data_output" in params:
        call = V2Call(call.id, call.outputs, _flag(params["binary_data_output"],
                                                   "binary_data_output"))
    offset = json_length
    inputs = []
    for i, spec in enumerate(header["inputs"]):
        if not isinstance(spec, dict) or not all(k in spec for k in ("name", "shape", "datatype")):
            raise RequestError(f"inputs[{i}] needs name, shape and datatype")
        where = f"inputs[{i}]"
        shape = _shape(spec["shape"], where)
        tparams = spec.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise RequestError(f"{where}: parameters must be an object")
        if "data" in spec:
            inputs.append(Tensor(str(spec["name"]), str(spec["datatype"]), shape, spec["data"]))
            continue
        size = tparams.get("binary_data_size")
        if size is None:
            raise RequestError(f"{where} has neither data nor binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(body):
            raise RequestError(f"{where}: binary_data_size {size} runs past the end of the "
                               f"body ({len(body) - offset} bytes left)")
        inputs.append(Tensor(str(spec["name"]), str(spec["datatype"]), shape,
                             raw=body[offset:offset + size]))
        offset += size
    if offset != len(body):
        raise RequestError(f"the body has {len(body) - offset} bytes that no input claims")
    sources = image_sources(image_input(inputs), max_images, max_pixels)
    return Request(sources, params, call)


def _json_data(out: OutputTensor) -> Any:
    flat = out.array.reshape(-1)
    if out.datatype == "BYTES":
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat]
    return flat


def encode_v2(answer: V2Answer, model_name: str, model_version: str) -> tuple[bytes, str, int]:
    """Serializes a V2 answer: ``(body, content type, JSON length or 0 when all JSON)``."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in answer.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype,
                                 "shape": list(out.array.shape)}
        if out.binary:
            blob = tensor_bytes(out.datatype, out.array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(out)
        outputs.append(entry)
    header = orjson.dumps({"id": answer.id, "model_name": model_name,
                           "model_version": model_version, "outputs": outputs},
                          option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, "application/json", 0
    return header + b"".join(blobs), "application/octet-stream", len(header)


class BodyTooLarge(Exception):
    """The (inflated) body passed the limit."""


class Inflater:
    """Inflates a ``Content-Encoding: gzip`` or ``deflate`` body chunk by chunk.

    ``limit`` applies to the inflated bytes, checked as they come out of zlib, so a
    small file that inflates to gigabytes costs no more than ``limit`` bytes.
    """

    ENCODINGS = ("gzip", "x-gzip", "deflate")

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self._zlib: Any = None

    @staticmethod
    def supported(encoding: str) -> bool:
        """Whether a ``Content-Encoding`` value can be inflated."""
        return encoding in Inflater.ENCODINGS

    def _new(self, first: bytes) -> Any:
        if self.encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # HTTP's "deflate" is the zlib format, but some clients send raw deflate.
        is_zlib = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)

    def _take(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.limit:
            raise BodyTooLarge
        return piece

    def feed(self, chunk: bytes) -> bytes:
        """Inflates one chunk; raises BodyTooLarge past the limit, RequestError on bad data."""
        out = []
        data = chunk
        try:
            while data:
                if self._zlib is None:
                    self._zlib = self._new(data)
                room = self.limit - self.size + 1
                out.append(self._take(self._zlib.decompress(data, room)))
                if self._zlib.eof:
                    data = self._zlib.unused_data
                    if data and self.encoding == "deflate":
                        raise RequestError("the deflate body has data after its end")
                    if data:
                        self._zlib = None  # another gzip member follows
                else:
                    data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise RequestError(f"the body is not valid {self.encoding} data ({exc})") from exc
        return b"".join(out)

    def finish(self) -> bytes:
        """The last inflated bytes; raises RequestError when the stream ended early."""
        if self._zlib is None:
            return b""
        try:
            tail = self._take(self._zlib.flush())
        except zlib.error as exc:
            raise RequestError(f"the body is not valid {self.encoding} data ({exc})") from exc
        if not self._zlib.eof:
            raise RequestError(f"the {self.encoding} body ends before its compressed stream does")
        return tail
