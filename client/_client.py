"""The synchronous client: one object, three protocols. Only the I/O lives here (see _base)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._base import BaseClient, GrpcCalls, RestCalls, prepare_batch
from ._config import ClientConfig, Protocol
from ._exceptions import ClientError, ModelNotReady
from ._http import HttpRequest
from ._images import PreparedImage
from ._retry import retry_sync
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
        self._backend: _RestBackend | _GrpcBackend
        if self.config.protocol == "grpc":
            self._backend = _GrpcBackend(self.config)
        else:
            self._backend = _RestBackend(self.config, transport)

    def __enter__(self) -> DetectionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes connections; the client cannot be used afterwards."""
        self._backend.close()

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
            call = functools.partial(self._backend.infer, prepared, options)
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
            return self._backend.health()
        except ModelNotReady:
            return Health(live=True, ready=False)

    def metadata(self) -> ModelMetadata:
        """The model's name, platform, inputs and outputs."""
        return retry_sync(self._backend.metadata, self.config, self._sleep)

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


class _RestBackend:
    """V1 or V2 REST over one httpx.Client."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None) -> None:
        import httpx

        self._calls = RestCalls(config)
        self._http = httpx.Client(**self._calls.http_settings(), transport=transport)

    def _send(self, request: HttpRequest) -> tuple[int, Any, bytes]:
        import httpx

        try:
            response = self._http.request(request.method, request.path,
                                          headers=dict(request.headers),
                                          content=request.content)
        except httpx.HTTPError as exc:
            raise self._calls.transport_error(exc) from None
        return response.status_code, response.headers, response.content

    def infer(self, images: Sequence[PreparedImage], options: DetectOptions) -> list[ImageResult]:
        answer = self._send(self._calls.infer_request(images, options))
        return self._calls.infer_results(*answer, images)

    def health(self) -> Health:
        return self._calls.health(*self._send(self._calls.ready_request()))

    def metadata(self) -> ModelMetadata:
        return self._calls.metadata(*self._send(self._calls.metadata_request()))

    def close(self) -> None:
        self._http.close()


class _GrpcBackend:
    """Open Inference Protocol gRPC over one channel."""

    def __init__(self, config: ClientConfig) -> None:
        self._calls = GrpcCalls(config)
        self._config = config
        self._channel = self._calls.channel(self._calls.wire.grpc)
        self._stub = self._calls.stub(self._channel)

    def _call(self, method: str, request: Any, what: str) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._config.timeout,
                                               metadata=self._calls.metadata)
        except self._calls.wire.grpc.RpcError as exc:
            raise self._calls.error(exc, what) from None

    def infer(self, images: Sequence[PreparedImage], options: DetectOptions) -> list[ImageResult]:
        response = self._call("ModelInfer", self._calls.infer_request(images, options), "infer")
        return self._calls.infer_results(response, images)

    def health(self) -> Health:
        return self._calls.health(self._call("ModelReady", self._calls.ready_request(), "health"))

    def metadata(self) -> ModelMetadata:
        request = self._calls.metadata_request()
        return self._calls.metadata_from(self._call("ModelMetadata", request, "metadata"))

    def close(self) -> None:
        self._channel.close()
