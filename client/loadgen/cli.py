"""``detect-client bench``'s command line: flags, pictures, the run, the table and JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .._options import positive_int
from .runner import BENCH_PROTOCOLS, DEFAULT_PROTOCOLS, generated_images, run_cell, wait_ready
from .senders import Target
from .stats import CellResult, format_table, hop_summary

__all__ = ["add_arguments", "main"]


# ---- command line --------------------------------------------------------------------

def _protocols(text: str) -> list[str]:
    names = [{"v2": "v2bin"}.get(v.strip(), v.strip()) for v in text.split(",") if v.strip()]
    if not names or any(n not in BENCH_PROTOCOLS for n in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BENCH_PROTOCOLS)}; got {text}")
    return names


def _clients(text: str) -> list[int]:
    return [positive_int(v) for v in text.split(",") if v.strip()] or [positive_int(text)]


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
                        help="comma-separated: v1, v2bin, grpc; web (POST /api/detect) and "
                             "deepstack (POST /v1/vision/detection) go through the web "
                             "backend at --web-url (default: v1,v2bin,grpc)")
    parser.add_argument("--web-url", default=None, metavar="URL",
                        help="the web backend (python -m client.web) for web and deepstack")
    parser.add_argument("--web-api-key-file", default=None, metavar="FILE",
                        help="file holding the web backend's API key, when it has one")
    parser.add_argument("--clients", type=_clients, default=[1, 8],
                        help="comma-separated concurrency levels (default 1,8)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="measured seconds per cell (default 8)")
    parser.add_argument("--requests", type=positive_int, default=None,
                        help="measure this many requests per cell instead of a duration")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unmeasured load before each cell (default 1)")
    parser.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files or folders to send (default: generated JPEGs)")
    parser.add_argument("--image-size", default="640x480",
                        help="WxH of generated images (default 640x480)")
    parser.add_argument("--images-per-request", type=positive_int, default=1)
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="score_threshold request parameter (default: the server's)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--no-metrics", action="store_true",
                        help="do not read the server's /metrics for the mean batch size")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def _load_images(args: argparse.Namespace) -> list[bytes]:
    from .._exceptions import ConfigError
    from .._files import expand_inputs

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
    from .._config import ClientConfig

    parser = argparse.ArgumentParser(
        prog="detect-client bench",
        description="Load-test a running detection server: throughput, latency "
                    "percentiles and mean batch size per protocol and concurrency.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = ClientConfig(url=args.url, model=args.model, grpc_url=args.grpc_url,
                          token=args.token, host_header=args.host_header, timeout=args.timeout)
    through_web = [p for p in args.protocols if p in ("web", "deepstack")]
    if through_web and not args.web_url:
        parser.error(f"--protocols {','.join(through_web)} needs --web-url, e.g. "
                     f"http://127.0.0.1:8000")
    if "deepstack" in args.protocols and args.images_per_request != 1:
        parser.error("the deepstack protocol sends one picture per request: drop "
                     "--images-per-request")
    key = None
    if args.web_api_key_file:
        key = Path(args.web_api_key_file).read_text(encoding="utf-8").strip()
    grpc_target, tls = config.grpc_target()
    target = Target(url=config.url, model=config.model, grpc_target=grpc_target, grpc_tls=tls,
                    headers=config.auth_headers(), timeout=config.timeout,
                    web_url=args.web_url, web_api_key=key)
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
