"""One cell of the table: N clients of one protocol against a running server, measured."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from client.loadgen import CellResult, Target, metric_totals, run_cell

from .report import PROFILE_METRICS, stage_profile

log = logging.getLogger("bench")


def _scrape(target: Target) -> dict[str, float]:
    import httpx

    try:
        text = httpx.get(f"{target.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return metric_totals(text, PROFILE_METRICS)


def measure_cells(target: Target, system: str, protocols: Sequence[str],
                  clients: Sequence[int], images: list[bytes], args: argparse.Namespace,
                  batch: int, profiles: list[dict[str, Any]] | None = None
                  ) -> list[CellResult]:
    """Every client count x protocol against ``target``; with ``profiles``, where the
    time went (from the server's /metrics before and after each cell)."""
    out = []
    for n in clients:
        for protocol in protocols:
            before = _scrape(target) if profiles is not None else {}
            cell = asyncio.run(run_cell(target, protocol, n, images, duration=args.duration,
                                        warmup=args.warmup))
            if profiles is not None:
                stages = stage_profile(before, _scrape(target), cell.mean_ms)
                if stages is not None:
                    profiles.append({"protocol": protocol, "clients": n, "stages": stages})
            log.info("%s %s x %d clients (max batch %d): %.1f img/s, p50 %.0f ms, p99 %.0f ms, "
                     "mean batch %s, %d errors", system, protocol, n, batch, cell.img_per_s,
                     cell.p50_ms, cell.p99_ms,
                     "-" if cell.mean_batch_size is None else f"{cell.mean_batch_size:.2f}",
                     cell.errors)
            out.append(cell)
    return out
