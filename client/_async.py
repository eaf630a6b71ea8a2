"""The asyncio client: the same calls as :class:`DetectionClient`, awaited; only its I/O here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._base import BaseClient, GrpcCalls, RestCalls, prepare_batch
from ._config import ClientConfig, Protocol
from ._exceptions import ClientError, ConfigError, ModelNotReady
from ._http import HttpRequest
from ._images import PreparedImage
from ._retry import retry_async
from ._types import DetectOptions, Health, ImageInput, ImageResult, ModelMetadata

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncDetectionClient"]


class AsyncDetectionClient(BaseClient):
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
        super().__init__(url, model, protocol, config, settings)
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
        options = self._options(score_threshold, max_detections, classes)
        gate = asyncio.Semaphore(concurrency)

        async def run(start: int, batch: list[ImageInput]) -> list[ImageResult]:
            async with gate:
                # Reading files and encoding pixels would otherwise stall the event loop.
                prepared = await asyncio.to_thread(prepare_batch, start, batch)
                return await retry_async(lambda: self._backend.infer(prepared, options),
                                         self.config, self._sleep)

        tasks = [asyncio.ensure_future(run(start, batch))
                 for start, batch in self._batches(images, batch_size)]
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
        wait = self._ready_wait(timeout, interval)
        while True:
            try:
                health = await self.health()
                if wait.saw(health=health):
                    return health
            except ClientError as exc:
                wait.saw(error=exc)
            await self._sleep(wait.pause())


class _AsyncRestBackend:
    """V1 or V2 REST over one httpx.AsyncClient."""

    def __init__(self, config: ClientConfig,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        import httpx

        self._calls = RestCalls(config)
        self._http = httpx.AsyncClient(**self._calls.http_settings(), transport=transport)

    async def _send(self, request: HttpRequest) -> tuple[int, Any, bytes]:
        import httpx

        try:
            response = await self._http.request(request.method, request.path,
                                                headers=dict(request.headers),
                                                content=request.content)
        except httpx.HTTPError as exc:
            raise self._calls.transport_error(exc) from None
        return response.status_code, response.headers, response.content

    async def infer(self, images: Sequence[PreparedImage],
                    options: DetectOptions) -> list[ImageResult]:
        answer = await self._send(self._calls.infer_request(images, options))
        return self._calls.infer_results(*answer, images)

    async def health(self) -> Health:
        return self._calls.health(*await self._send(self._calls.ready_request()))

    async def metadata(self) -> ModelMetadata:
        return self._calls.metadata(*await self._send(self._calls.metadata_request()))

    async def close(self) -> None:
        await self._http.aclose()


class _AsyncGrpcBackend:
    """Open Inference Protocol gRPC over one ``grpc.aio`` channel."""

    def __init__(self, config: ClientConfig) -> None:
        self._calls = GrpcCalls(config)
        self._config = config
        self._channel = self._calls.channel(self._calls.wire.grpc.aio)
        self._stub = self._calls.stub(self._channel)

    async def _call(self, method: str, request: Any, what: str) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._config.timeout,
                                                     metadata=self._calls.metadata)
        except self._calls.wire.grpc.RpcError as exc:
            raise self._calls.error(exc, what) from None

    async def infer(self, images: Sequence[PreparedImage],
                    options: DetectOptions) -> list[ImageResult]:
        response = await self._call("ModelInfer", self._calls.infer_request(images, options),
                                    "infer")
        return self._calls.infer_results(response, images)

    async def health(self) -> Health:
        response = await self._call("ModelReady", self._calls.ready_request(), "health")
        return self._calls.health(response)

    async def metadata(self) -> ModelMetadata:
        request = self._calls.metadata_request()
        return self._calls.metadata_from(await self._call("ModelMetadata", request, "metadata"))

    async def close(self) -> None:
        await self._channel.close()
