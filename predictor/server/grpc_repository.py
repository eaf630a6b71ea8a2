"""The V2 model-repository calls over gRPC: load, unload and index.

Two V2 gRPC protos are in use and they disagree on the repository messages. KServe's
(``python/kserve/kserve/protocol/grpc/grpc_predict_v2.proto``) has
``RepositoryModelLoadRequest { string model_name = 1; }`` and no ``RepositoryIndex``;
Triton's (``grpc_service.proto`` in triton-inference-server/common) has
``{ string repository_name = 1; string model_name = 2; map parameters = 3; }`` and
``RepositoryIndex``. So the name is read from field 2 when there is one (Triton's
clients), else field 1 (KServe's), and ``RepositoryIndex`` is served by a handler of its own
whose messages are written here by hand (four strings a model; no generated code).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from .grpc_servicer import DetectorServicer
from .repository import DetectorRepository

SERVICE = "inference.GRPCInferenceService"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` of a protobuf message: varints as ints, the rest as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def model_name(request: Any) -> str:
    """The model a load or unload request names, from either proto (see the module doc)."""
    strings = {n: v for n, v in fields(request.SerializeToString()) if isinstance(v, bytes)}
    raw = strings.get(2) or strings.get(1) or b""
    return raw.decode("utf-8", "replace")


def encode_index(models: list[dict[str, str]]) -> bytes:
    """Triton's ``RepositoryIndexResponse``: ``repeated ModelIndex models = 1``."""
    out = b""
    for entry in models:
        item = b"".join(_field(n, entry[key].encode()) for n, key in
                        ((1, "name"), (2, "version"), (3, "state"), (4, "reason")) if entry[key])
        out += _field(1, item)
    return out


def decode_index_request(data: bytes) -> bool:
    """``RepositoryIndexRequest``'s ``ready`` (field 2)."""
    return any(n == 2 and bool(v) for n, v in fields(data))


class RepositoryServicer(DetectorServicer):
    """The detector's servicer, with the repository's load and unload."""

    def __init__(self, data_plane: Any, model_repository_extension: Any,
                 repository: DetectorRepository,
                 on_reject: Callable[[str], None] | None = None) -> None:
        super().__init__(data_plane, model_repository_extension, on_reject=on_reject)
        self.repository = repository

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Loads a model of the repository."""
        name = model_name(request)
        try:
            await self.repository.load_named(name)
        except Exception as exc:
            raise self._refusal(exc, uuid.uuid4().hex, "RepositoryModelLoad") from exc
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Unloads a model, once its queued requests are answered."""
        name = model_name(request)
        try:
            await self.repository.unload_named(name)
        except Exception as exc:
            raise self._refusal(exc, uuid.uuid4().hex, "RepositoryModelUnload") from exc
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    async def RepositoryIndex(self, request: bytes, context: Any) -> bytes:  # noqa: N802
        """Triton's ``RepositoryIndex``: every model of the repository and its state."""
        try:
            ready = decode_index_request(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {exc}")
        return encode_index(self.repository.index(ready))


def index_handler(servicer: Any) -> grpc.GenericRpcHandler | None:
    """A handler for ``RepositoryIndex`` beside KServe's generated ones (None without one)."""
    method = getattr(servicer, "RepositoryIndex", None)
    if method is None:
        return None
    handler = grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=lambda b: b, response_serializer=lambda b: b)
    return grpc.method_handlers_generic_handler(SERVICE, {"RepositoryIndex": handler})
