"""The synchronous client: one object, three protocols."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._batching import as_image_list, chunks, wait_ready_error
from ._config import ClientConfig, Protocol
from ._exceptions import ModelNotFound, ModelNotReady, Overloaded, ServerUnreachable
from ._http import (
    USER_AGENT,
    HttpRequest,
    RestCodec,
    error_for_status,
    error_for_transport,
    tls_verify,
)
from ._images import PreparedImage, prepare
from ._retry import retry_sync
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata
from ._v1 import V1Codec
from ._v2rest import V2Codec

if TYPE_CHECKING:
    import httpx

__all__ = ["DetectionClient"]


class DetectionClient:
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
        self.config = config or ClientConfig(url=url, model=model, protocol=protocol, **settings)
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
        options = DetectOptions(score_threshold, max_detections,
                                tuple(classes) if classes is not None else None)
        size = batch_size or self.config.batch_size
        for start, batch in chunks(as_image_list(images), size):
            prepared = [prepare(image, start + i) for i, image in enumerate(batch)]
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
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = self.health()
                if health.ready:
                    return health
                last: Exception = ModelNotReady(f"model {self.config.model!r} is not ready")
            except (ServerUnreachable, ModelNotFound, Overloaded) as exc:
                # An ingress answers 404 or 503 until the model's route exists.
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wait_ready_error(last, timeout) from None
            self._sleep(min(interval, remaining))


class _RestBackend:
    """V1 or V2 REST over one httpx.Client."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None) -> None:
        import httpx

        self._config = config
        self._codec: V1Codec | V2Codec = V1Codec(config.model) if config.protocol == "v1" \
            else V2Codec(config.model)
        self._http = httpx.Client(
            base_url=config.url,
            headers={"User-Agent": USER_AGENT, **config.auth_headers()},
            timeout=config.timeout,
            verify=tls_verify(config),
            transport=transport,
        )

    def _send(self, request: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        import httpx

        try:
            response = self._http.request(request.method, request.path,
                                          headers=dict(request.headers),
                                          content=request.content)
        except httpx.HTTPError as exc:
            raise error_for_transport(exc, self._config.url, self._config.timeout) from None
        return response.status_code, response.headers, response.content

    def infer(self, images: Sequence[PreparedImage], options: DetectOptions) -> list[ImageResult]:
        status, headers, content = self._send(self._codec.infer_request(images, options))
        if status != 200:
            raise error_for_status(status, headers, content, what="infer",
                                   model=self._config.model)
        return self._codec.infer_response(headers, content, images)

    def health(self) -> Health:
        codec: RestCodec = self._codec
        return codec.health_from(*self._send(codec.ready_request()))

    def metadata(self) -> ModelMetadata:
        status, headers, content = self._send(self._codec.metadata_request())
        if status != 200:
            raise error_for_status(status, headers, content, what="metadata",
                                   model=self._config.model)
        return self._codec.metadata_from(content)

    def close(self) -> None:
        self._http.close()


class _GrpcBackend:
    """Open Inference Protocol gRPC over one channel."""

    def __init__(self, config: ClientConfig) -> None:
        from . import _grpc

        self._config = config
        self._grpc = _grpc
        self._target, _ = config.grpc_target()
        creds = _grpc.credentials(config)
        options = _grpc.channel_options(config)
        grpc = _grpc.grpc
        self._channel = (grpc.secure_channel(self._target, creds, options=options) if creds
                         else grpc.insecure_channel(self._target, options=options))
        self._stub = _grpc.stub(self._channel)
        self._metadata = _grpc.request_metadata(config)

    def _call(self, method: str, request: Any, what: str) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._config.timeout,
                                               metadata=self._metadata)
        except self._grpc.grpc.RpcError as exc:
            raise self._grpc.error_for_rpc(exc, what=what, model=self._config.model,
                                           target=self._target) from None

    def infer(self, images: Sequence[PreparedImage], options: DetectOptions) -> list[ImageResult]:
        request = self._grpc.infer_request(self._config.model, images, options)
        return self._grpc.infer_results(self._call("ModelInfer", request, "infer"), images)

    def health(self) -> Health:
        request = self._grpc.pb.ModelReadyRequest(name=self._config.model)
        return self._grpc.health_from(self._call("ModelReady", request, "health"))

    def metadata(self) -> ModelMetadata:
        request = self._grpc.pb.ModelMetadataRequest(name=self._config.model)
        return self._grpc.metadata_from(self._call("ModelMetadata", request, "metadata"))

    def close(self) -> None:
        self._channel.close()

