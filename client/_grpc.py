"""Open Inference Protocol over gRPC: channels, messages and status-code mapping.

Imported only when a client uses ``protocol="grpc"``, so REST users never load grpc.
:class:`GrpcCodec` writes the messages and reads the answers (no I/O); the channel's
settings are here too, for the transport in ``_transport``. Tensors travel in
``raw_input_contents`` / ``raw_output_contents``, as standard V2 servers expect; BYTES
elements carry a 4-byte little-endian length prefix.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ._config import ClientConfig
from ._exceptions import (
    BadRequest,
    ClientError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    Unauthorized,
)
from ._http import retry_after_seconds
from ._images import PreparedImage, encoded_batch, pixel_batch
from ._tensors import INPUT_NAME, OUTPUT_NAMES, array_from_raw, pack_bytes, results_from_outputs
from ._types import DetectOptions, Health, ImageResult, ModelMetadata, TensorSpec

# Imported by name so that type checkers do not descend into untyped generated code.
pb: Any = importlib.import_module(f"{__package__}.protos.inference_pb2")
pb_grpc: Any = importlib.import_module(f"{__package__}.protos.inference_pb2_grpc")

__all__ = [
    "GrpcCall",
    "GrpcCodec",
    "channel_options",
    "credentials",
    "error_for_rpc",
    "grpc",
    "open_channel",
    "pb",
    "request_metadata",
    "stub",
]

# Words gRPC uses in UNAVAILABLE details when no connection could be made at all.
_CONNECT_FAILURES = ("failed to connect", "connection refused", "dns resolution failed",
                     "name resolution", "no address", "connect failed", "socket closed",
                     "handshake")


@dataclass(frozen=True)
class GrpcCall:
    """One call to make: the service's method, its request message, and what it is for.

    Attributes:
        method: ``ModelInfer``, ``ModelReady`` or ``ModelMetadata``.
        message: The request message.
        what: How error messages name the call (``infer``, ``health``, ``metadata``).
    """

    method: str
    message: Any
    what: str


def stub(channel: Any) -> Any:
    """The generated service stub on ``channel`` (sync or ``grpc.aio``)."""
    return pb_grpc.GRPCInferenceServiceStub(channel)


def open_channel(config: ClientConfig, module: Any) -> Any:
    """A channel to ``config``'s gRPC target from ``grpc`` or ``grpc.aio`` (both have the
    same two constructors), with TLS when the target asks for it."""
    target, _ = config.grpc_target()
    secure = credentials(config)
    if secure is not None:
        return module.secure_channel(target, secure, options=channel_options(config))
    return module.insecure_channel(target, options=channel_options(config))


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    """Channel options: no message size caps, and the ``Host`` override as authority."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.primary_user_agent", "detect-client/0.1"),
    ]
    if config.host_header:
        options.append(("grpc.default_authority", config.host_header))
    return options


def credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials when the target uses TLS, else None (a plaintext channel)."""
    _, tls = config.grpc_target()
    if not tls:
        return None
    root = None
    if config.ca_file:
        with open(config.ca_file, "rb") as fh:
            root = fh.read()
    return grpc.ssl_channel_credentials(root_certificates=root)


def request_metadata(config: ClientConfig) -> list[tuple[str, str]]:
    """Per-call metadata: the bearer token and extra headers (gRPC wants lowercase keys)."""
    metadata = [(key.lower(), value) for key, value in config.headers.items()
                if key.lower() != "host"]
    if config.token:
        metadata.append(("authorization", f"Bearer {config.token.strip()}"))
    return metadata


class GrpcCodec:
    """V2 gRPC for one model: the calls to make and how to read their answers. No I/O."""

    def __init__(self, model: str) -> None:
        self.model = model

    def infer_request(self, images: Sequence[PreparedImage], options: DetectOptions
                      ) -> GrpcCall:
        """``ModelInfer`` for one batch: one input tensor in ``raw_input_contents``."""
        request = pb.ModelInferRequest(model_name=self.model)
        tensor = request.inputs.add(name=INPUT_NAME)
        pixels = pixel_batch(images)
        if pixels is not None:
            tensor.datatype = "UINT8"
            tensor.shape.extend(pixels.shape)
            request.raw_input_contents.append(pixels.tobytes())
        else:
            encoded = encoded_batch(images)
            tensor.datatype = "BYTES"
            tensor.shape.append(len(encoded))
            request.raw_input_contents.append(pack_bytes(encoded))
        for key, value in options.v2_parameters().items():
            param = request.parameters[key]
            if isinstance(value, str):
                param.string_param = value
            elif isinstance(value, int):
                param.int64_param = value
            else:
                param.double_param = value
        for name in OUTPUT_NAMES:
            request.outputs.add(name=name)
        return GrpcCall("ModelInfer", request, "infer")

    def infer_results(self, answer: Any, images: Sequence[PreparedImage]
                      ) -> list[ImageResult]:
        """Per-image results from a ``ModelInferResponse``."""
        outputs: dict[str, np.ndarray] = {}
        raw = list(answer.raw_output_contents)
        for i, tensor in enumerate(answer.outputs):
            shape = [int(d) for d in tensor.shape]
            if i < len(raw):
                outputs[tensor.name] = array_from_raw(raw[i], tensor.datatype, shape)
            else:
                outputs[tensor.name] = _from_contents(tensor, shape)
        return results_from_outputs(outputs, [image.size for image in images],
                                    answer.model_version or None)

    def ready_request(self) -> GrpcCall:
        """``ModelReady``: the readiness probe."""
        return GrpcCall("ModelReady", pb.ModelReadyRequest(name=self.model), "health")

    def health(self, answer: Any) -> Health:
        """Health from a ``ModelReadyResponse`` (the server answered, so it is live)."""
        return Health(live=True, ready=bool(answer.ready))

    def metadata_request(self) -> GrpcCall:
        """``ModelMetadata``."""
        return GrpcCall("ModelMetadata", pb.ModelMetadataRequest(name=self.model), "metadata")

    def metadata(self, answer: Any) -> ModelMetadata:
        """Metadata from a ``ModelMetadataResponse``."""
        def specs(items: Any) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(name=t.name, datatype=t.datatype,
                                    shape=tuple(int(d) for d in t.shape)) for t in items)

        return ModelMetadata(name=answer.name, platform=answer.platform,
                             versions=tuple(answer.versions), inputs=specs(answer.inputs),
                             outputs=specs(answer.outputs))


def error_for_rpc(exc: grpc.RpcError, *, what: str, model: str, target: str) -> ClientError:
    """The exception for a failed call, from its status code and details."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    name = code.name if code is not None else "UNKNOWN"
    where = f"{what} on model {model!r}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(f"{where}: the server refused the request", status=name,
                          detail=details)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(f"{where}: the server has no such model (check --model)",
                             status=name, detail=details or None)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Unauthorized(f"{where}: the server refused the credentials (check --token)",
                            status=name, detail=details or None)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeout(f"no answer from {target} in time (raise --timeout)")
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if any(word in lowered for word in _CONNECT_FAILURES):
            return ServerUnreachable(f"cannot connect to {target}: {details}")
        if "not ready" in lowered:
            return ModelNotReady(f"{where}: the model is not ready", status=name,
                                 detail=details)
        return Overloaded(f"{where}: the server is unavailable", status=name,
                          detail=details or None, retry_after=_retry_after(exc))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(f"{where}: the server is overloaded", status=name,
                          detail=details or None, retry_after=_retry_after(exc))
    return ServerError(f"{where}: the call failed with {name}", status=name,
                       detail=details or None)


def _retry_after(exc: grpc.RpcError) -> float | None:
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # aio errors raise when no metadata arrived
        return None
    for key, value in trailing:
        if key.lower() == "retry-after":
            return retry_after_seconds(value if isinstance(value, str) else value.decode())
    return None


def _from_contents(tensor: Any, shape: list[int]) -> np.ndarray:
    """An output sent in typed ``contents`` rather than raw bytes."""
    contents = tensor.contents
    fields = {
        "FP32": contents.fp32_contents, "FP64": contents.fp64_contents,
        "INT32": contents.int_contents, "INT64": contents.int64_contents,
        "INT8": contents.int_contents, "INT16": contents.int_contents,
        "UINT8": contents.uint_contents, "UINT32": contents.uint_contents,
        "UINT64": contents.uint64_contents, "BOOL": contents.bool_contents,
    }
    if tensor.datatype == "BYTES":
        flat = np.empty(len(contents.bytes_contents), dtype=object)
        flat[:] = list(contents.bytes_contents)
        values: np.ndarray = flat
    elif tensor.datatype in fields:
        values = np.asarray(list(fields[tensor.datatype]))
    else:
        raise ServerError(f"the server sent a tensor of unknown datatype {tensor.datatype!r}")
    try:
        return values.reshape(shape)
    except ValueError:
        raise ServerError(
            f"output {tensor.name!r} has {values.size} values, which do not fit {shape}"
        ) from None
