"""The synchronous client: one object, three protocols.

What to send and how to read it is the codec's (``_base``); the sending is the
transport's (``_transport``); this module only puts the two together, with retries.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._base import BaseClient, prepare_batch
from ._config import ClientConfig, Protocol
from ._exceptions import ClientError, ModelNotReady
from ._images import PreparedImage
from ._repository import ModelEntry, list_models
from ._retry import retry_sync
from ._transport import HttpxTransport, open_transport
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata

if TYPE_CHECKING:
    import httpx

__all__ = ["DetectionClient"]


class DetectionClient(BaseClient):
    """Sends images to a detection model and returns typed detections.

    Example::

        with DetectionClient("http://127.0.0.1:8080", protocol="grpc") as client:
            for det in client.detect_one("cat.jpg").detections:
                print(det.label, det.score, det.box)

    Args:
        url: REST base URL of the server or ingress.
        model: Model name.
        protocol: ``"v1"``, ``"v2"`` or ``"grpc"``.
        config: A ready-made :class:`ClientConfig`; replaces every other setting.
        transport: An httpx transport (e.g. ``httpx.MockTransport``) for REST calls.
        sleep: Called to wait between retries; ``time.sleep`` by default.
        **settings: Any other :class:`ClientConfig` field (``grpc_url``, ``host_header``,
            ``token``, ``ca_file``, ``timeout``, ``retries``, ``backoff``,
            ``max_backoff``, ``batch_size``, ``headers``).

    Raises:
        ConfigError: A setting is invalid.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        model: str = "detector",
        protocol: Protocol = "v2",
        config: ClientConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(url, model, protocol, config, settings)
        self._sleep = sleep or time.sleep
        self._transport = open_transport(self.config, transport)
        self._rest_transport = transport

    def __enter__(self) -> DetectionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes connections; the client cannot be used afterwards."""
        self._transport.close()

    def detect(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
        batch_size: int | None = None,
    ) -> list[ImageResult]:
        """Detects objects in each image; results come in the order of ``images``.

        Args:
            images: One image or several: file paths, encoded bytes, PIL images, or
                ``H x W x 3`` uint8 arrays (a ``B x H x W x 3`` array is ``B`` images).
            score_threshold: Lowest score to return; the server's default when None.
            max_detections: Most detections per image; the server's default when None.
            classes: Only these class names (or ids).
            batch_size: Images per request; the client's ``batch_size`` when None.

        Raises:
            UnreadableInput: An image cannot be read.
            ClientError: Any other failure (see the exception tree).
        """
        return list(self.iter_detect(images, score_threshold=score_threshold,
                                     max_detections=max_detections, classes=classes,
                                     batch_size=batch_size))

    def iter_detect(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
        batch_size: int | None = None,
    ) -> Iterator[ImageResult]:
        """Like :meth:`detect`, yielding results as batches complete; reads files lazily."""
        options = self._options(score_threshold, max_detections, classes)
        for start, batch in self._batches(images, batch_size):
            prepared = prepare_batch(start, batch)
            call = functools.partial(self._infer, prepared, options)
            yield from retry_sync(call, self.config, self._sleep)

    def detect_one(
        self,
        image: ImageInput,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
    ) -> ImageResult:
        """Detects objects in one image."""
        return self.detect([image], score_threshold=score_threshold,
                           max_detections=max_detections, classes=classes)[0]

    def health(self) -> Health:
        """One probe: is the server live and the model ready? Never retried.

        Raises:
            ServerUnreachable: No answer.
            ModelNotFound: The server has no such model.
        """
        try:
            return self._codec.health(self._transport.send(self._codec.ready_request()))
        except ModelNotReady:
            return Health(live=True, ready=False)

    def metadata(self) -> ModelMetadata:
        """The model's name, platform, inputs and outputs."""
        def call() -> ModelMetadata:
            return self._codec.metadata(self._transport.send(self._codec.metadata_request()))

        return retry_sync(call, self.config, self._sleep)

    def models(self) -> list[ModelEntry]:
        """The server's models: every model of its repository with its state, or (a server
        without a repository index) the models it serves. Over REST, whatever the protocol.
        """
        def call() -> list[ModelEntry]:
            if self.config.protocol != "grpc":
                return list_models(self._transport.send)
            rest = HttpxTransport(self.config, self._rest_transport)
            try:
                return list_models(rest.send)
            finally:
                rest.close()

        return retry_sync(call, self.config, self._sleep)

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> Health:
        """Polls :meth:`health` until the model is ready.

        Raises:
            ServerUnreachable, ModelNotReady, ModelNotFound: Still so after ``timeout``
                seconds; the message says what the last probe saw.
        """
        wait = self._ready_wait(timeout, interval)
        while True:
            try:
                health = self.health()
                if wait.saw(health=health):
                    return health
            except ClientError as exc:
                wait.saw(error=exc)
            self._sleep(wait.pause())

    def _infer(self, images: Sequence[PreparedImage], options: DetectOptions
               ) -> list[ImageResult]:
        """One request: a batch out, its results in."""
        answer = self._transport.send(self._codec.infer_request(images, options))
        return self._codec.infer_results(answer, images)
