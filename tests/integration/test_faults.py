"""Faults inside the server: one failure costs one request, never its batch-mates.

- Out of device memory on a batch (injected on the CPU): the batch is split and retried,
  everyone else gets their detections, only the image that cannot fit fails, with a 503
  that shows no internals.
- An exception in one request's postprocessing fails that request only.
- A client that goes away mid-request is counted, its work dropped, and the server serves on.
- The event loop stays free during a long batch: the health check still answers at once.

The first two drive :class:`predictor.model.DetectionModel` in-process, as KServe does.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from predictor.config import BatchingConfig, ModelConfig, ServerConfig
from predictor.errors import InternalError, ServiceError
from predictor.model import DetectionModel
from predictor.pipeline.detections import RawDetections
from predictor.pipeline.detections import select as real_select
from predictor.pipeline.engine import Engine, OutOfMemory
from predictor.protocol import RequestError
from predictor.protocol.v1 import parse_v1
from tests.support.servers import Server

pytestmark = pytest.mark.integration

TOO_BIG = (333, 333)  # the image that runs out of memory even alone (height, width)
POISON = (77, 77)  # the image whose postprocessing raises
LEAKS = ("Traceback", "/work", "site-packages", '.py"', "OutOfMemory", "RuntimeError")


def picture(size: tuple[int, int], colour: tuple[int, int, int] = (90, 160, 30)) -> bytes:
    """A PNG of ``size`` (height, width)."""
    buf = io.BytesIO()
    Image.new("RGB", (size[1], size[0]), colour).save(buf, "PNG")
    return buf.getvalue()


def v1(*sizes: tuple[int, int]) -> dict[str, Any]:
    return {"instances": [{"b64": base64.b64encode(picture(s)).decode()} for s in sizes],
            "parameters": {"score_threshold": 0.05}}


@pytest.fixture(scope="module")
def batch_calls() -> list[tuple[int, bool]]:
    """(batch size, succeeded) for every call of the model, in order."""
    return []


@pytest.fixture(scope="module")
def model(random_model_dir: Path, batch_calls: list[tuple[int, bool]]
          ) -> Iterator[DetectionModel]:
    """A loaded DetectionModel whose engine 'runs out of memory' like a small GPU would.

    Batches of more than two images fail, and so does any batch holding a 333x333 image.
    """
    real_run = Engine.run

    def run(self: Engine, images: Sequence[np.ndarray]) -> list[RawDetections]:
        if len(images) > 2 or any(img.shape[:2] == TOO_BIG for img in images):
            batch_calls.append((len(images), False))
            raise OutOfMemory(f"out of device memory on a batch of {len(images)}")
        batch_calls.append((len(images), True))
        return real_run(self, images)

    mp = pytest.MonkeyPatch()
    mp.setattr(Engine, "run", run)  # before the model exists: its batcher keeps the method
    cfg = ServerConfig(
        model=ModelConfig(model_dir=str(random_model_dir), device="cpu",
                          warmup_batch_sizes=(1,)),
        batching=BatchingConfig(max_batch_size=8, max_batch_delay_ms=100,
                                request_timeout_ms=120_000),
    )
    detector = DetectionModel(cfg)
    detector.load()
    batch_calls.clear()  # the warm-up's call
    yield detector
    asyncio.run(detector.drain(5))
    mp.undo()


async def serve(model: DetectionModel, body: dict[str, Any]) -> Any:
    """One request through the model, as KServe's data plane runs it."""
    job = await model.preprocess(parse_v1(body, 64))
    job = await model.predict(job)
    return await model.postprocess(job)


async def serve_all(model: DetectionModel, bodies: list[dict[str, Any]]) -> list[Any]:
    model.batcher.start()  # on this event loop
    results = await asyncio.gather(*(serve(model, b) for b in bodies), return_exceptions=True)
    await model.batcher.stop(5)
    return results


def test_out_of_memory_splits_the_batch_and_fails_only_the_image_that_cannot_fit(
        model: DetectionModel, batch_calls: list[tuple[int, bool]]) -> None:
    sizes = [(100 + i, 120 + i) for i in range(6)]
    # The image that cannot fit sits in the middle of the first batch, among others.
    bodies = [v1(s) for s in sizes[:3]] + [v1(TOO_BIG)] + [v1(s) for s in sizes[3:]]
    bodies.append(v1((140, 150), (141, 151)))
    # The reference: each image alone, through the same path.
    alone = [asyncio.run(serve_all(model, [v1(s)]))[0]
             for s in [*sizes, (140, 150), (141, 151)]]
    batch_calls.clear()

    results = asyncio.run(serve_all(model, bodies))

    print(f"\n[oom] model calls (batch size, ok): {batch_calls}")
    assert any(size > 2 and not ok for size, ok in batch_calls), "no batch was big enough to fail"
    assert all(size <= 2 for size, ok in batch_calls if ok)
    assert (1, False) in batch_calls  # the image that cannot fit, alone at last
    failed = results.pop(3)
    for i, result in enumerate(results[:6]):
        assert isinstance(result, dict), f"request {i}: {result!r}"
        assert result == alone[i], f"request {i}: answer differs from the image run alone"
    pair = results[6]
    assert isinstance(pair, dict), repr(pair)
    assert pair["predictions"] == [alone[6]["predictions"][0], alone[7]["predictions"][0]]
    assert isinstance(failed, ServiceError), repr(failed)
    assert failed.http_status == 503
    assert "memory" in str(failed)
    for leak in LEAKS:
        assert leak not in str(failed)


def test_postprocessing_error_fails_only_its_request(model: DetectionModel,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def select(raw: RawDetections, options: Any, labels: Any, image_size: tuple[int, int]
               ) -> Any:
        if tuple(image_size) == POISON:
            raise ValueError("boom: a bug in postprocessing at /work/secret/path.py")
        return real_select(raw, options, labels, image_size)

    monkeypatch.setattr("predictor.model.select", select)
    bodies = [v1((90, 100)), v1(POISON), v1((91, 101), (92, 102)), v1((93, 103))]
    results = asyncio.run(serve_all(model, bodies))

    failed = results[1]
    assert isinstance(failed, InternalError), repr(failed)
    assert "postprocessing failed" in str(failed)
    assert "boom" not in str(failed)
    assert "/work" not in str(failed)
    for i in (0, 2, 3):
        assert isinstance(results[i], dict), f"request {i}: {results[i]!r}"
    assert [p["image_size"] for p in results[2]["predictions"]] == [[91, 101], [92, 102]]


def test_bad_input_in_process_is_a_request_error(model: DetectionModel) -> None:
    # The wire's own error: the server's edge answers it with 400 / INVALID_ARGUMENT.
    (result,) = asyncio.run(serve_all(model, [{"instances": [{"b64": "%%%"}]}]))
    assert isinstance(result, RequestError)
    assert "base64" in str(result)


# ---- against the real server ---------------------------------------------------------
def rejected(http_url: str, reason: str) -> float:
    text = httpx.get(f"{http_url}/metrics", timeout=10).text
    match = re.search(rf'^detector_rejected_requests_total\{{reason="{reason}"\}} (\S+)$', text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def queue_depth(http_url: str) -> float:
    text = httpx.get(f"{http_url}/metrics", timeout=10).text
    match = re.search(r"^detector_queue_depth (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_client_that_disconnects_is_counted_and_dropped(served_model: Server) -> None:
    url = f"{served_model.http_url}/v1/models/detector:predict"
    before = rejected(served_model.http_url, "client_disconnected")
    body = v1(*[(400 + i, 520) for i in range(64)])  # far more work than the 0.3 s read timeout
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url, json=body, timeout=httpx.Timeout(10, read=0.3))
    deadline = time.monotonic() + 20
    while rejected(served_model.http_url, "client_disconnected") <= before:
        assert time.monotonic() < deadline, "the disconnect was never counted"
        time.sleep(0.1)
    # Its images leave the queue instead of costing model time for no one.
    while queue_depth(served_model.http_url) > 0:
        assert time.monotonic() < deadline, "the abandoned images stayed queued"
        time.sleep(0.1)
    r = httpx.post(url, json=v1((64, 80)), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["image_size"] == [64, 80]


def test_health_answers_during_a_long_batch(served_model: Server) -> None:
    url = f"{served_model.http_url}/v1/models/detector:predict"
    answer: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: answer.append(
        httpx.post(url, json=v1(*[(300 + i, 400) for i in range(30)]), timeout=300)))
    worker.start()
    deadline = time.monotonic() + 30
    while queue_depth(served_model.http_url) == 0:  # wait until the batch work has started
        assert worker.is_alive()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    latencies: list[float] = []
    with httpx.Client(timeout=10) as client:
        while worker.is_alive() and len(latencies) < 20:
            started = time.monotonic()
            assert client.get(f"{served_model.http_url}/v2/health/live").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    worker.join(300)
    print(f"\n[health] {len(latencies)} checks during a 30-image request: "
          f"max {max(latencies) * 1000:.0f} ms")
    assert len(latencies) >= 3, "the request finished before the health checks could run"
    assert max(latencies) < 0.5
    assert answer[0].status_code == 200
    assert len(answer[0].json()["predictions"]) == 30
