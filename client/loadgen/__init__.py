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

from .cli import add_arguments, main
from .runner import BENCH_PROTOCOLS, generated_images, run_cell, wait_ready
from .senders import Target
from .stats import (
    SERVER_METRICS,
    CellResult,
    format_table,
    hop_summary,
    metric_totals,
    percentile,
    summarize,
)

__all__ = [
    "BENCH_PROTOCOLS", "SERVER_METRICS", "CellResult", "Target", "add_arguments",
    "format_table", "generated_images", "hop_summary", "main", "metric_totals", "percentile",
    "run_cell", "summarize", "wait_ready",
]
