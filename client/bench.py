"""``detect-client bench``: a load generator for a running detection server, any URL.

N concurrent clients each send one request at a time (one image per request by
default) over V1 JSON (base64), V2 REST with the binary tensor extension (``v2bin``)
or gRPC, for a fixed duration or a fixed number of requests; ``web`` sends the same
pictures through the web backend (``python -m client.web``) instead, to measure what
that extra hop costs. Request bodies are built once up front, so the generator spends
its CPU on the wire rather than on encoding. Each cell reports throughput, latency
percentiles, detections per image, and from the server's ``/metrics`` its mean batch
size and the mean time of one model call. Never imports torch, kserve or the predictor.

Example::

    detect-client bench --url http://127.0.0.1:8080 --protocols v1,v2bin,grpc \\
        --clients 1,8 --duration 8 --out bench.json
    detect-client bench --protocols v2bin,web --web-url http://127.0.0.1:8000 --clients 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._bench_report import (
    SERVER_METRICS,
    CellResult,
    format_table,
    hop_summary,
    metric_totals,
    percentile,
    summarize,
)
from ._bench_senders import RequestFailed, Target, make_sender

__all__ = [
    "BENCH_PROTOCOLS", "SERVER_METRICS", "CellResult", "Target", "add_arguments",
    "format_table", "generated_images", "hop_summary", "main", "metric_totals", "percentile",
    "run_cell", "summarize",
]

BENCH_PROTOCOLS = ("v1", "v2bin", "grpc", "web")
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
    from ._exceptions import ClientError
    from ._images import prepare
    from ._types import DetectOptions

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

    from ._exceptions import ModelNotReady, ServerUnreachable

    try:
        async with httpx.AsyncClient(base_url=target.url, timeout=10,
                                     headers=dict(target.headers)) as client:
            response = await client.get(f"/v2/models/{target.model}/ready")
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"cannot reach {target.url}: {exc}") from None
    if response.status_code != 200:
        raise ModelNotReady(f"model {target.model!r} is not ready at {target.url} "
                            f"(HTTP {response.status_code})")


# ---- command line --------------------------------------------------------------------

def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _protocols(text: str) -> list[str]:
    names = [{"v2": "v2bin"}.get(v.strip(), v.strip()) for v in text.split(",") if v.strip()]
    if not names or any(n not in BENCH_PROTOCOLS for n in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BENCH_PROTOCOLS)}; got {text}")
    return names


def _clients(text: str) -> list[int]:
    return [_positive(v) for v in text.split(",") if v.strip()] or [_positive(text)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load generator's flags."""
    parser.add_argument("--url", default=os.environ.get("DETECT_CLIENT_URL",
                                                         "http://127.0.0.1:8080"),
                        help="REST base URL (also where /metrics is read)")
    parser.add_argument("--model", default=os.environ.get("DETECT_CLIENT_MODEL", "detector"))
    parser.add_argument("--grpc-url", default=None,
                        help="gRPC host:port (grpcs://host:port for TLS); by default the REST "
                             "host with port 8081 when the URL uses 8080")
    parser.add_argument("--token", default=os.environ.get("DETECT_CLIENT_TOKEN"),
                        help="bearer token")
    parser.add_argument("--host-header", default=None, help="Host header for an ingress")
    parser.add_argument("--protocols", type=_protocols, default=list(DEFAULT_PROTOCOLS),
                        help="comma-separated: v1, v2bin, grpc, and web: through the web "
                             "backend at --web-url (default: v1,v2bin,grpc)")
    parser.add_argument("--web-url", default=None, metavar="URL",
                        help="the web backend (python -m client.web) for --protocols web")
    parser.add_argument("--clients", type=_clients, default=[1, 8],
                        help="comma-separated concurrency levels (default 1,8)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="measured seconds per cell (default 8)")
    parser.add_argument("--requests", type=_positive, default=None,
                        help="measure this many requests per cell instead of a duration")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unmeasured load before each cell (default 1)")
    parser.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders to send (default: generated JPEGs)")
    parser.add_argument("--image-size", default="640x480",
                        help="WxH of generated images (default 640x480)")
    parser.add_argument("--images-per-request", type=_positive, default=1)
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="score_threshold request parameter (default: the server's)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--no-metrics", action="store_true",
                        help="do not read the server's /metrics for the mean batch size")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def _load_images(args: argparse.Namespace) -> list[bytes]:
    from ._exceptions import ConfigError
    from ._files import expand_inputs

    if args.images:
        return [path.read_bytes() for path in expand_inputs(args.images)]
    try:
        w, h = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size {args.image_size!r}: give WxH like 640x480") from None
    return generated_images(8, (w, h))


async def _run_all(args: argparse.Namespace, target: Target, images: list[bytes]
                   ) -> list[CellResult]:
    await wait_ready(target)
    results = []
    for clients in args.clients:
        for protocol in args.protocols:
            print(f"bench: {protocol} x {clients} client(s)...", file=sys.stderr, flush=True)
            result = await run_cell(
                target, protocol, clients, images,
                duration=None if args.requests else args.duration, requests=args.requests,
                warmup=args.warmup, images_per_request=args.images_per_request,
                score_threshold=args.score_threshold, metrics=not args.no_metrics)
            print(f"bench: {protocol} x {clients}: {result.img_per_s:.1f} img/s, "
                  f"p50 {result.p50_ms:.1f} ms, {result.errors} error(s)",
                  file=sys.stderr, flush=True)
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``detect-client bench``: prints the table; exit status 1 when any request failed."""
    from ._config import ClientConfig

    parser = argparse.ArgumentParser(
        prog="detect-client bench",
        description="Load-test a running detection server: throughput, latency "
                    "percentiles and mean batch size per protocol and concurrency.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = ClientConfig(url=args.url, model=args.model, grpc_url=args.grpc_url,
                          token=args.token, host_header=args.host_header, timeout=args.timeout)
    if "web" in args.protocols and not args.web_url:
        parser.error("--protocols web needs --web-url, e.g. http://127.0.0.1:8000")
    grpc_target, tls = config.grpc_target()
    target = Target(url=config.url, model=config.model, grpc_target=grpc_target, grpc_tls=tls,
                    headers=config.auth_headers(), timeout=config.timeout,
                    web_url=args.web_url)
    images = _load_images(args)
    results = asyncio.run(_run_all(args, target, images))
    print(format_table([r.to_dict() for r in results]))
    for line in hop_summary(results):
        print(line)
    if args.out:
        doc = {"url": target.url, "model": target.model, "images": len(images),
               "images_per_request": args.images_per_request,
               "cells": [r.to_dict() for r in results]}
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    kinds = sum((Counter(r.error_kinds) for r in results), Counter[str]())
    if kinds:
        print(f"detect-client bench: {sum(kinds.values())} request(s) failed: "
              + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())), file=sys.stderr)
        return 1
    return 0
