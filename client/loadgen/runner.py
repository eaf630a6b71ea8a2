"""One benchmark cell: N clients in a loop for a duration or a request count, measured."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .senders import RequestFailed, Target, make_sender
from .stats import CellResult, metric_totals, summarize

__all__ = ["BENCH_PROTOCOLS", "DEFAULT_PROTOCOLS", "generated_images", "run_cell", "wait_ready"]

BENCH_PROTOCOLS = ("v1", "v2bin", "grpc", "web", "deepstack")
# What runs when --protocols is not given: the inference service's own wires.
DEFAULT_PROTOCOLS = ("v1", "v2bin", "grpc")
# Seconds a client pauses after a failed request, so a refusing server is not hammered.
_ERROR_PAUSE = 0.05


# ---- images and requests -------------------------------------------------------------

def generated_images(count: int = 8, size: tuple[int, int] = (640, 480), seed: int = 0,
                     quality: int = 90) -> list[bytes]:
    """``count`` JPEGs of ``size`` (w, h): gradients with a few filled shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(count):
        c0, c1 = rng.uniform(0, 255, size=(2, 3))
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        pixels = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3))
        pixels = pixels + rng.normal(0, 8, size=(h, w, 3))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            side = float(rng.uniform(min(w, h) / 8, min(w, h) / 3))
            x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.uniform() < 0.5 else draw.rectangle
            shape([x, y, x + side, y + side], fill=colour)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


async def _scrape(target: Target) -> dict[str, float] | None:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=10, headers=dict(target.headers)) as client:
            response = await client.get(f"{target.url}/metrics")
    except httpx.HTTPError:
        return None
    return metric_totals(response.text) if response.status_code == 200 else None


# ---- one cell ------------------------------------------------------------------------

async def run_cell(target: Target, protocol: str, clients: int, images: Sequence[bytes], *,
                   duration: float | None = 8.0, requests: int | None = None,
                   warmup: float = 1.0, images_per_request: int = 1,
                   score_threshold: float | None = None, metrics: bool = True
                   ) -> CellResult:
    """Runs ``clients`` concurrent request loops and measures them.

    With ``duration``, counts the requests that complete in the window of that length
    starting ``warmup`` seconds in (clients keep sending throughout, so the window sees
    a steady state). With ``requests``, runs that many requests after the warm-up and
    divides by the time from the end of the warm-up to the last answer.
    """
    if (duration is None) == (requests is None):
        raise ValueError("give exactly one of duration and requests")
    if clients < 1 or images_per_request < 1 or not images:
        raise ValueError("clients and images_per_request must be >= 1, images non-empty")
    from .._exceptions import ClientError
    from .._images import prepare
    from .._types import DetectOptions

    n = images_per_request
    prepared = [prepare(img, i) for i, img in enumerate(images)]
    batches = [[prepared[(i * n + j) % len(prepared)] for j in range(n)]
               for i in range(len(prepared))]
    sender = make_sender(target, protocol, batches,
                          DetectOptions(score_threshold=score_threshold), clients)
    # start, end, detections, error, the answer's own inner call (web) in seconds
    records: list[tuple[float, float, int, str | None, float | None]] = []
    begin = time.perf_counter()
    t0 = begin + warmup
    t1 = t0 + duration if duration is not None else math.inf
    left = [requests or 0]

    async def scrape_at(when: float) -> dict[str, float] | None:
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        return await _scrape(target) if metrics else None

    async def loop(k: int) -> None:
        index = k
        while True:
            start = time.perf_counter()
            if start >= t1:
                return
            if requests is not None and start >= t0:
                if left[0] <= 0:
                    return
                left[0] -= 1
            error: str | None = None
            found = 0
            inner = None
            try:
                response = await sender(index)
                end = time.perf_counter()
                found = sender.detections(response)
                inner = sender.inner_seconds(response)
            except RequestFailed as exc:
                end, error = time.perf_counter(), str(exc)
            except (ClientError, ValueError, KeyError, TypeError) as exc:
                end, error = time.perf_counter(), f"bad response ({type(exc).__name__})"
            records.append((start, end, found, error, inner))
            index += clients
            if error:
                await asyncio.sleep(_ERROR_PAUSE)

    try:
        before = asyncio.ensure_future(scrape_at(t0))
        after = asyncio.ensure_future(scrape_at(t1)) if duration is not None else None
        await asyncio.gather(*(loop(k) for k in range(clients)))
        first = await before
        last = await after if after is not None else await scrape_at(0.0)
    finally:
        await sender.close()

    if duration is not None:
        counted = [r for r in records if t0 <= r[1] <= t1]
        seconds = duration
    else:
        counted = [r for r in records if r[0] >= t0]
        seconds = max((r[1] for r in counted), default=t0) - t0
    errors = Counter(r[3] for r in counted if r[3] is not None)
    good = [r for r in counted if r[3] is None]
    server = ({k: last[k] - first[k] for k in last if k in first}
              if first is not None and last is not None else None)
    return summarize(protocol, clients, [r[1] - r[0] for r in good], seconds,
                     images_per_request=n, errors=errors,
                     detections=sum(r[2] for r in good), server=server,
                     inner_s=[r[4] for r in good])


async def wait_ready(target: Target) -> None:
    """Raises ServerUnreachable or ModelNotReady unless the model answers ready."""
    import httpx

    from .._exceptions import ModelNotReady, ServerUnreachable

    try:
        async with httpx.AsyncClient(base_url=target.url, timeout=10,
                                     headers=dict(target.headers)) as client:
            response = await client.get(f"/v2/models/{target.model}/ready")
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"cannot reach {target.url}: {exc}") from None
    if response.status_code != 200:
        raise ModelNotReady(f"model {target.model!r} is not ready at {target.url} "
                            f"(HTTP {response.status_code})")
