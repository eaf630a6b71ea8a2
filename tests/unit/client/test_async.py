"""AsyncDetectionClient over REST: order under concurrency, retries, errors, readiness."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from client import AsyncDetectionClient, BadRequest, ConfigError, ModelNotReady


def png(width: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, 4), (5, 5, 5)).save(out, format="PNG")
    return out.getvalue()


def answer_with_widths(request: httpx.Request) -> httpx.Response:
    """Each image's detection score is its width / 100, so order is visible."""
    import base64

    predictions = []
    for instance in json.loads(request.content)["instances"]:
        image = Image.open(io.BytesIO(base64.b64decode(instance["image_bytes"]["b64"])))
        predictions.append({"image_size": [image.height, image.width], "detections": [
            {"box": [0, 0, 1, 1], "score": image.width / 100, "label": "x", "label_id": 1}]})
    return httpx.Response(200, json={"predictions": predictions})


def make(handler: Any, sleeps: list[float] | None = None, **settings: Any
         ) -> AsyncDetectionClient:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    settings.setdefault("protocol", "v1")
    return AsyncDetectionClient("http://m.test", transport=httpx.MockTransport(handler),
                                sleep=sleep, **settings)


def test_concurrent_batches_keep_input_order() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return answer_with_widths(request)

    async def run() -> list[float]:
        async with make(handler) as client:
            results = await client.detect([png(w) for w in range(10, 30)], batch_size=3,
                                          concurrency=4)
        return [r.detections[0].score for r in results]

    assert asyncio.run(run()) == pytest.approx([w / 100 for w in range(10, 30)])
    assert 1 < peak <= 4


def test_retries_and_errors_match_the_sync_client() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "3"}, json={"error": "busy"})
        if b"score_threshold" in request.content:
            return httpx.Response(400, json={"error": "score_threshold 7.0 is out of range"})
        return answer_with_widths(request)

    sleeps: list[float] = []

    async def run() -> None:
        async with make(handler, sleeps) as client:
            assert (await client.detect_one(png(12))).detections[0].score == 0.12
            with pytest.raises(BadRequest, match="out of range"):
                await client.detect_one(png(12), score_threshold=7.0)
            with pytest.raises(ConfigError):
                await client.detect([png(1)], concurrency=0)

    asyncio.run(run())
    assert sleeps == [3.0]
    assert len(calls) == 3


def test_wait_ready_gives_up_with_not_ready() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "Model with name detector is not ready."})

    async def run() -> None:
        async with make(handler, protocol="v2") as client:
            assert not (await client.health()).ready
            with pytest.raises(ModelNotReady, match="not ready after 0.05s"):
                await client.wait_ready(timeout=0.05, interval=0.01)

    asyncio.run(run())
