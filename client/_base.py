"""Everything the sync and async clients share that does no I/O.

:class:`BaseClient` holds the configuration, turns the ``detect`` arguments into
options and batches, and runs ``wait_ready``'s bookkeeping (:class:`ReadyWait`).
:class:`RestCalls` and :class:`GrpcCalls` say what to send and how to read what comes
back, for REST (V1 or V2, through the codecs in ``_v1`` / ``_v2rest``) and for gRPC.
:class:`~client.DetectionClient` and :class:`~client.AsyncDetectionClient` add only
the sending: an ``httpx.Client`` or ``httpx.AsyncClient``, a ``grpc`` or ``grpc.aio``
channel, ``time.sleep`` or ``asyncio.sleep``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._config import ClientConfig, Protocol
from ._exceptions import ClientError, ModelNotFound, ModelNotReady, Overloaded, ServerUnreachable
from ._http import USER_AGENT, HttpRequest, error_for_status, error_for_transport, tls_verify
from ._images import PreparedImage, prepare
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata
from ._v1 import V1Codec
from ._v2rest import V2Codec

__all__ = ["BaseClient", "GrpcCalls", "ReadyWait", "RestCalls", "as_image_list", "chunks"]


def as_image_list(images: ImageInput | Iterable[ImageInput]) -> Iterable[Any]:
    """The ``images`` argument as an iterable of single images.

    One image (a path, bytes, a PIL image, an ``H x W x 3`` array) becomes a list of one;
    a ``B x H x W x 3`` array becomes ``B`` images; any other iterable is kept lazy.
    """
    value: Any = images
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [value]
    ndim = getattr(value, "ndim", None)
    if ndim is not None:
        return list(value) if ndim == 4 else [value]
    if hasattr(value, "getpixel") or not isinstance(value, Iterable):
        return [value]  # a PIL image (checked without importing PIL), or a lone object
    return value


def chunks(items: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """Consecutive lists of at most ``size`` items, each with the index of its first."""
    iterator = iter(items)
    start = 0
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield start, batch
        start += len(batch)


def prepare_batch(start: int, batch: Sequence[ImageInput]) -> list[PreparedImage]:
    """Reads and checks the images of one request (``start`` numbers them in errors)."""
    return [prepare(image, start + i) for i, image in enumerate(batch)]


class ReadyWait:
    """``wait_ready``'s logic: feed it each probe's outcome, sleep what it says.

    Raises, once ``timeout`` seconds have passed, an error of the last probe's kind.
    """

    def __init__(self, model: str, timeout: float, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.timeout = timeout
        self.interval = interval
        self.clock = clock
        self.deadline = clock() + timeout
        self.last: Exception = ModelNotReady(f"model {model!r} is not ready")

    def saw(self, health: Health | None = None, error: Exception | None = None) -> bool:
        """Records one probe; True when the model is ready."""
        if error is not None:
            if not isinstance(error, (ServerUnreachable, ModelNotFound, Overloaded)):
                raise error
            self.last = error  # an ingress answers 404 or 503 until the model's route exists
            return False
        if health is not None and health.ready:
            return True
        self.last = ModelNotReady(f"model {self.model!r} is not ready")
        return False

    def pause(self) -> float:
        """Seconds to sleep before the next probe; raises when time is up."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise self.error() from None
        return min(self.interval, remaining)

    def error(self) -> ClientError:
        """The error ``wait_ready`` raises, keeping the last probe's kind."""
        message = f"not ready after {self.timeout:g}s; last check: {self.last}"
        if isinstance(self.last, ModelNotFound):
            return ModelNotFound(message, status=self.last.status)
        if isinstance(self.last, ServerUnreachable):
            return ServerUnreachable(message)
        if isinstance(self.last, Overloaded):
            return Overloaded(message, status=self.last.status)
        return ModelNotReady(message)


class BaseClient:
    """Configuration and argument handling shared by both clients."""

    def __init__(self, url: str, model: str, protocol: Protocol, config: ClientConfig | None,
                 settings: Mapping[str, Any]) -> None:
        self.config = config or ClientConfig(url=url, model=model, protocol=protocol,
                                             **settings)

    @staticmethod
    def _options(score_threshold: float | None, max_detections: int | None,
                 classes: Sequence[str | int] | None) -> DetectOptions:
        return DetectOptions(score_threshold, max_detections,
                             tuple(classes) if classes is not None else None)

    def _batches(self, images: ImageInput | Iterable[ImageInput],
                 batch_size: int | None) -> Iterator[tuple[int, list[Any]]]:
        return chunks(as_image_list(images), batch_size or self.config.batch_size)

    def _ready_wait(self, timeout: float, interval: float) -> ReadyWait:
        return ReadyWait(self.config.model, timeout, interval)


class RestCalls:
    """V1 or V2 REST: what to send and how to read the answer."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.codec: V1Codec | V2Codec = (V1Codec(config.model) if config.protocol == "v1"
                                         else V2Codec(config.model))

    def http_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
        return {"base_url": self.config.url,
                "headers": {"User-Agent": USER_AGENT, **self.config.auth_headers()},
                "timeout": self.config.timeout, "verify": tls_verify(self.config)}

    def transport_error(self, exc: Exception) -> ClientError:
        """An httpx failure (no answer) as the client's error."""
        return error_for_transport(exc, self.config.url, self.config.timeout)

    def infer_request(self, images: Sequence[PreparedImage],
                      options: DetectOptions) -> HttpRequest:
        """The inference request for one batch."""
        return self.codec.infer_request(images, options)

    def infer_results(self, status: int, headers: Mapping[str, str], content: bytes,
                      images: Sequence[PreparedImage]) -> list[ImageResult]:
        """The detections of an answer; an error status raises its error."""
        if status != 200:
            raise error_for_status(status, headers, content, what="infer",
                                   model=self.config.model)
        return self.codec.infer_response(headers, content, images)

    def ready_request(self) -> HttpRequest:
        """The readiness probe."""
        return self.codec.ready_request()

    def health(self, status: int, headers: Mapping[str, str], content: bytes) -> Health:
        """The probe's answer as health."""
        return self.codec.health_from(status, headers, content)

    def metadata_request(self) -> HttpRequest:
        """The model metadata request."""
        return self.codec.metadata_request()

    def metadata(self, status: int, headers: Mapping[str, str], content: bytes
                 ) -> ModelMetadata:
        """The metadata answer; an error status raises its error."""
        if status != 200:
            raise error_for_status(status, headers, content, what="metadata",
                                   model=self.config.model)
        return self.codec.metadata_from(content)


class GrpcCalls:
    """V2 gRPC: the channel's settings, the requests, and how to read the answers."""

    def __init__(self, config: ClientConfig) -> None:
        from . import _grpc

        self.config = config
        self.wire = _grpc
        self.target, _ = config.grpc_target()
        self.credentials = _grpc.credentials(config)
        self.options = _grpc.channel_options(config)
        self.metadata = _grpc.request_metadata(config)

    def channel(self, module: Any) -> Any:
        """A channel from ``grpc`` or ``grpc.aio`` (both have the same two constructors)."""
        if self.credentials:
            return module.secure_channel(self.target, self.credentials, options=self.options)
        return module.insecure_channel(self.target, options=self.options)

    def stub(self, channel: Any) -> Any:
        """The inference service stub on ``channel``."""
        return self.wire.stub(channel)

    def error(self, exc: Any, what: str) -> ClientError:
        """A failed call as the client's error."""
        return self.wire.error_for_rpc(exc, what=what, model=self.config.model,
                                       target=self.target)

    def infer_request(self, images: Sequence[PreparedImage], options: DetectOptions) -> Any:
        """``("ModelInfer", request)`` for one batch."""
        return self.wire.infer_request(self.config.model, images, options)

    def infer_results(self, response: Any, images: Sequence[PreparedImage]
                      ) -> list[ImageResult]:
        """The detections of an answer."""
        return self.wire.infer_results(response, images)

    def ready_request(self) -> Any:
        """The readiness probe."""
        return self.wire.pb.ModelReadyRequest(name=self.config.model)

    def health(self, response: Any) -> Health:
        """The probe's answer as health."""
        return self.wire.health_from(response)

    def metadata_request(self) -> Any:
        """The model metadata request."""
        return self.wire.pb.ModelMetadataRequest(name=self.config.model)

    def metadata_from(self, response: Any) -> ModelMetadata:
        """The metadata answer."""
        return self.wire.metadata_from(response)
