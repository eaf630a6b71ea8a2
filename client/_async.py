"""The asyncio client: the same calls as :class:`DetectionClient`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._batching import as_image_list, chunks, wait_ready_error
from ._config import ClientConfig, Protocol
from ._exceptions import ConfigError, ModelNotFound, ModelNotReady, Overloaded, ServerUnreachable
from ._http import (
    USER_AGENT,
    HttpRequest,
    error_for_status,
    error_for_transport,
    tls_verify,
)
from ._images import PreparedImage, prepare
from ._retry import retry_async
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata
from ._v1 import V1Codec
from ._v2rest import V2Codec

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncDetectionClient"]


class AsyncDetectionClient:
    """Sends images to a detection model from asyncio code.

    Takes the same arguments as :class:`DetectionClient`; ``transport`` is an
    ``httpx.AsyncBaseTransport`` and ``sleep`` a coroutine function. Use it as
    ``async with AsyncDetectionClient(...) as client:``.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        model: str = "detector",
        protocol: Protocol = "v2",
        config: ClientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        **settings: Any,
    ) -> None:
        self.config = config or ClientConfig(url=url, model=model, protocol=protocol, **settings)
        self._sleep = sleep or asyncio.sleep
        self._backend: _AsyncRestBackend | _AsyncGrpcBackend
        if self.config.protocol == "grpc":
            self._backend = _AsyncGrpcBackend(self.config)
        else:
            self._backend = _AsyncRestBackend(self.config, transport)

    async def __aenter__(self) -> AsyncDetectionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes connections."""
        await self._backend.close()

    async def detect(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
        batch_size: int | None = None,
        concurrency: int = 1,
    ) -> list[ImageResult]:
        """Detects objects in each image; see :meth:`DetectionClient.detect`.

        Args:
            concurrency: Requests in flight at once; results keep the input order.
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        options = DetectOptions(score_threshold, max_detections,
                                tuple(classes) if classes is not None else None)
        size = batch_size or self.config.batch_size
        gate = asyncio.Semaphore(concurrency)

        async def run(start: int, batch: list[ImageInput]) -> list[ImageResult]:
            async with gate:
                # Reading files and encoding pixels would otherwise stall the event loop.
                prepared = await asyncio.to_thread(
                    lambda: [prepare(image, start + i) for i, image in enumerate(batch)])
                return await retry_async(lambda: self._backend.infer(prepared, options),
                                         self.config, self._sleep)

        tasks = [asyncio.ensure_future(run(start, batch))
                 for start, batch in chunks(as_image_list(images), size)]
        try:
            batches = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [result for batch in batches for result in batch]

    async def detect_one(
        self,
        image: ImageInput,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
    ) -> ImageResult:
        """Detects objects in one image."""
        results = await self.detect([image], score_threshold=score_threshold,
                                    max_detections=max_detections, classes=classes)
        return results[0]

    async def health(self) -> Health:
        """One probe of server liveness and model readiness; never retried."""
        try:
            return await self._backend.health()
        except ModelNotReady:
            return Health(live=True, ready=False)

    async def metadata(self) -> ModelMetadata:
        """The model's name, platform, inputs and outputs."""
        return await retry_async(self._backend.metadata, self.config, self._sleep)

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> Health:
        """Polls :meth:`health` until the model is ready; see ``DetectionClient.wait_ready``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = await self.health()
                if health.ready:
                    return health
                last: Exception = ModelNotReady(f"model {self.config.model!r} is not ready")
            except (ServerUnreachable, ModelNotFound, Overloaded) as exc:
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wait_ready_error(last, timeout) from None
            await self._sleep(min(interval, remaining))


class _AsyncRestBackend:
    """V1 or V2 REST over one httpx.AsyncClient."""

    def __init__(self, config: ClientConfig,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        import httpx

        self._config = config
        self._codec: V1Codec | V2Codec = V1Codec(config.model) if config.protocol == "v1" \
            else V2Codec(config.model)
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers={"User-Agent": USER_AGENT, **config.auth_headers()},
            timeout=config.timeout,
            verify=tls_verify(config),
            transport=transport,
        )

    async def _send(self, request: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        import httpx

        try:
            response = await self._http.request(request.method, request.path,
                                                headers=dict(request.headers),
                                                content=request.content)
        except httpx.HTTPError as exc:
            raise error_for_transport(exc, self._config.url, self._config.timeout) from None
        return response.status_code, response.headers, response.content

    async def infer(self, images: Sequence[PreparedImage],
                    options: DetectOptions) -> list[ImageResult]:
        status, headers, content = await self._send(self._codec.infer_request(images, options))
        if status != 200:
            raise error_for_status(status, headers, content, what="infer",
                                   model=self._config.model)
        return self._codec.infer_response(headers, content, images)

    async def health(self) -> Health:
        return self._codec.health_from(*await self._send(self._codec.ready_request()))

    async def metadata(self) -> ModelMetadata:
        status, headers, content = await self._send(self._codec.metadata_request())
        if status != 200:
            raise error_for_status(status, headers, content, what="metadata",
                                   model=self._config.model)
        return self._codec.metadata_from(content)

    async def close(self) -> None:
        await self._http.aclose()


class _AsyncGrpcBackend:
    """Open Inference Protocol gRPC over one ``grpc.aio`` channel."""

    def __init__(self, config: ClientConfig) -> None:
        from . import _grpc

        self._config = config
        self._grpc = _grpc
        self._target, _ = config.grpc_target()
        creds = _grpc.credentials(config)
        options = _grpc.channel_options(config)
        aio = _grpc.grpc.aio
        self._channel = (aio.secure_channel(self._target, creds, options=options) if creds
                         else aio.insecure_channel(self._target, options=options))
        self._stub = _grpc.stub(self._channel)
        self._metadata = _grpc.request_metadata(config)

    async def _call(self, method: str, request: Any, what: str) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._config.timeout,
                                                     metadata=self._metadata)
        except self._grpc.grpc.RpcError as exc:
            raise self._grpc.error_for_rpc(exc, what=what, model=self._config.model,
                                           target=self._target) from None

    async def infer(self, images: Sequence[PreparedImage],
                    options: DetectOptions) -> list[ImageResult]:
        request = self._grpc.infer_request(self._config.model, images, options)
        return self._grpc.infer_results(await self._call("ModelInfer", request, "infer"),
                                        images)

    async def health(self) -> Health:
        request = self._grpc.pb.ModelReadyRequest(name=self._config.model)
        return self._grpc.health_from(await self._call("ModelReady", request, "health"))

    async def metadata(self) -> ModelMetadata:
        request = self._grpc.pb.ModelMetadataRequest(name=self._config.model)
        return self._grpc.metadata_from(await self._call("ModelMetadata", request, "metadata"))

    async def close(self) -> None:
        await self._channel.close()
