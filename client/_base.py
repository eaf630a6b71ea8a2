"""Everything the sync and async clients share that does no I/O.

:class:`BaseClient` holds the configuration and the protocol's codec, turns the
``detect`` arguments into options and batches, and runs ``wait_ready``'s bookkeeping
(:class:`ReadyWait`). A :class:`Codec` says what to send and how to read what comes
back: ``_v1.V1Codec`` and ``_v2rest.V2Codec`` for REST, ``_grpc.GrpcCodec`` for gRPC.
:class:`~client.DetectionClient` and :class:`~client.AsyncDetectionClient` add only
the sending, through the one I/O seam in ``_transport``, and ``time.sleep`` or
``asyncio.sleep``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ._config import ClientConfig
from ._config import Protocol as WireProtocol
from ._exceptions import ClientError, ModelNotFound, ModelNotReady, Overloaded, ServerUnreachable
from ._images import PreparedImage, prepare
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata

__all__ = ["BaseClient", "Codec", "ReadyWait", "as_image_list", "chunks", "codec_for",
           "prepare_batch"]

RequestT = TypeVar("RequestT", covariant=True)
AnswerT = TypeVar("AnswerT", contravariant=True)


class Codec(Protocol[RequestT, AnswerT]):
    """One protocol for one model: the requests to send and how to read their answers.

    An answer that reports a failure (an HTTP error status) raises its
    :class:`~client.ClientError` when read.
    """

    def infer_request(self, images: Sequence[PreparedImage], options: DetectOptions
                      ) -> RequestT:
        """The inference request for one batch."""
        ...

    def infer_results(self, answer: AnswerT, images: Sequence[PreparedImage]
                      ) -> list[ImageResult]:
        """The per-image detections in the answer to :meth:`infer_request`."""
        ...

    def ready_request(self) -> RequestT:
        """The readiness probe."""
        ...

    def health(self, answer: AnswerT) -> Health:
        """The probe's answer as health."""
        ...

    def metadata_request(self) -> RequestT:
        """The model metadata request."""
        ...

    def metadata(self, answer: AnswerT) -> ModelMetadata:
        """The metadata in the answer to :meth:`metadata_request`."""
        ...


def codec_for(config: ClientConfig) -> Codec[Any, Any]:
    """The codec of ``config.protocol`` for ``config.model`` (gRPC's loads grpc)."""
    if config.protocol == "grpc":
        from ._grpc import GrpcCodec

        return GrpcCodec(config.model)
    if config.protocol == "v1":
        from ._v1 import V1Codec

        return V1Codec(config.model)
    from ._v2rest import V2Codec

    return V2Codec(config.model)


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
    """Configuration, codec and argument handling shared by both clients."""

    def __init__(self, url: str, model: str, protocol: WireProtocol,
                 config: ClientConfig | None, settings: Mapping[str, Any]) -> None:
        self.config = config or ClientConfig(url=url, model=model, protocol=protocol,
                                             **settings)
        self._codec = codec_for(self.config)

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
