"""The asyncio client: the same calls as :class:`DetectionClient`, awaited.

As in ``_client``: the codec (``_base``) says what to send, the transport
(``_transport``) sends it; this module puts the two together, with retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._base import BaseClient, prepare_batch
from ._config import ClientConfig, Protocol
from ._exceptions import ClientError, ConfigError, ModelNotReady
from ._images import PreparedImage
from ._repository import ModelEntry, list_models_async
from ._retry import retry_async
from ._transport import AsyncHttpxTransport, open_async_transport
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
        self._transport = open_async_transport(self.config, transport)
        self._rest_transport = transport

    async def __aenter__(self) -> AsyncDetectionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes connections."""
        await self._transport.close()

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
                return await retry_async(lambda: self._infer(prepared, options),
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
            answer = await self._transport.send(self._codec.ready_request())
            return self._codec.health(answer)
        except ModelNotReady:
            return Health(live=True, ready=False)

    async def metadata(self) -> ModelMetadata:
        """The model's name, platform, inputs and outputs."""
        async def call() -> ModelMetadata:
            answer = await self._transport.send(self._codec.metadata_request())
            return self._codec.metadata(answer)

        return await retry_async(call, self.config, self._sleep)

    async def models(self) -> list[ModelEntry]:
        """The server's models (see :meth:`DetectionClient.models`)."""
        async def call() -> list[ModelEntry]:
            if self.config.protocol != "grpc":
                return await list_models_async(self._transport.send)
            rest = AsyncHttpxTransport(self.config, self._rest_transport)
            try:
                return await list_models_async(rest.send)
            finally:
                await rest.close()

        return await retry_async(call, self.config, self._sleep)

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

    async def _infer(self, images: Sequence[PreparedImage], options: DetectOptions
                     ) -> list[ImageResult]:
        """One request: a batch out, its results in."""
        answer = await self._transport.send(self._codec.infer_request(images, options))
        return self._codec.infer_results(answer, images)
