"""Several models in one server, measured: ``python -m bench.multi`` (``make bench-multi``).

One ``python -m predictor --model_repository`` with three copies of the demo detector
(site-a, site-b, site-c). Then, in one run:

- **busy**: ``--clients`` threads send the same picture to site-a without pause; every
  answer is compared with site-a's answer before the run (a wrong one counts);
- **one more client** on site-a and **one quiet client** on site-b, both timed (p50):
  a fair server keeps the quiet model's requests waiting no longer than the busy one's;
- **the agent**: meanwhile a fourth model (site-d) is copied in and loaded, answers a few
  requests, then its folder is deleted and it is unloaded (KServe's agent order, v0.20.0
  ``pkg/agent/puller.go``); the server's RSS is read before the load, after it and after
  the unload.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import launch
from client import DetectionClient

from .engines import _rss_mb

DEMO = Path(__file__).resolve().parents[1] / "predictor" / "demo" / "model"


def _picture() -> bytes:
    return (DEMO / "example.jpg").read_bytes()


def _boxes(client: DetectionClient, model: str, data: bytes) -> np.ndarray:
    result = client.detect_one(data, score_threshold=0.3)
    return np.array([[*d.box, d.score, d.label_id] for d in result.detections])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=0.02))


class Loop(threading.Thread):
    """One client sending to one model until told to stop; latencies and failures."""

    def __init__(self, url: str, model: str, data: bytes, reference: np.ndarray,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.data, self.reference, self.stop = (
            url, model, data, reference, stop)
        self.latencies: list[float] = []
        self.errors = 0
        self.wrong = 0

    def run(self) -> None:
        with DetectionClient(self.url, model=self.model, timeout=120, retries=0) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    got = _boxes(client, self.model, self.data)
                except Exception:  # noqa: BLE001 - every failure counts, none stops the run
                    self.errors += 1
                    continue
                self.latencies.append(time.perf_counter() - start)
                self.wrong += not _same(got, self.reference)


def agent_cycle(http: httpx.Client, repository: Path, server: launch.ServerProcess,
                data: bytes) -> dict[str, Any]:
    """Copy, load, serve, delete, unload site-d; RSS around it and what went wrong."""
    out: dict[str, Any] = {"rss_before_mb": _rss_mb(server.proc.pid)}
    shutil.copytree(DEMO, repository / "site-d")
    loaded = http.post("/v2/repository/models/site-d/load", json={})
    out["load_status"] = loaded.status_code
    with DetectionClient(server.url, model="site-d", timeout=120) as client:
        out["site_d_detections"] = len(client.detect_one(data, score_threshold=0.3).detections)
    out["rss_loaded_mb"] = _rss_mb(server.proc.pid)
    shutil.rmtree(repository / "site-d")
    out["unload_status"] = http.post("/v2/repository/models/site-d/unload",
                                     json={}).status_code
    time.sleep(2.0)
    out["rss_after_mb"] = _rss_mb(server.proc.pid)
    return out


def run(clients: int, duration: float, log_dir: Path, extra: Sequence[str]) -> dict[str, Any]:
    """The whole measurement; the figures as a dict."""
    data = _picture()
    with tempfile.TemporaryDirectory(prefix="bench-multi-") as tmp:
        repository = Path(tmp)
        for name in ("site-a", "site-b", "site-c"):
            shutil.copytree(DEMO, repository / name)
        server = launch.start("predictor", ["--model_repository", str(repository), *extra],
                              log_dir, model_name="site-a")
        try:
            with DetectionClient(server.url, model="site-a") as client:
                reference = _boxes(client, "site-a", data)
            stop = threading.Event()
            busy = [Loop(server.url, "site-a", data, reference, stop) for _ in range(clients)]
            extra_busy = Loop(server.url, "site-a", data, reference, stop)
            quiet = Loop(server.url, "site-b", data, reference, stop)
            for loop in (*busy, extra_busy, quiet):
                loop.start()
            time.sleep(duration / 3)
            with httpx.Client(base_url=server.url, timeout=300) as http:
                cycle = agent_cycle(http, repository, server, data)
            time.sleep(max(0.0, duration * 2 / 3 - 1))
            stop.set()
            for loop in (*busy, extra_busy, quiet):
                loop.join(120)
        finally:
            server.stop()
    everyone = [*busy, extra_busy]
    return {
        "clients": clients,
        "busy_answers": sum(len(x.latencies) for x in everyone),
        "busy_errors": sum(x.errors for x in everyone),
        "busy_wrong": sum(x.wrong for x in everyone),
        "quiet_answers": len(quiet.latencies), "quiet_errors": quiet.errors,
        "quiet_wrong": quiet.wrong,
        "p50_one_more_busy_ms": statistics.median(extra_busy.latencies) * 1000,
        "p50_quiet_ms": statistics.median(quiet.latencies) * 1000,
        **cycle,
    }


def format_report(r: dict[str, Any]) -> str:
    """The figures, one line each, with the goals beside them."""
    rss = r["rss_after_mb"] / r["rss_before_mb"]
    return "\n".join([
        f"busy model (site-a, {r['clients']} + 1 clients): {r['busy_answers']} answers, "
        f"{r['busy_errors']} errors, {r['busy_wrong']} wrong (goal: 0 and 0)",
        f"quiet model (site-b, 1 client): {r['quiet_answers']} answers, {r['quiet_errors']} "
        f"errors, {r['quiet_wrong']} wrong",
        f"fairness: p50 quiet {r['p50_quiet_ms']:.0f} ms, p50 of one more busy client "
        f"{r['p50_one_more_busy_ms']:.0f} ms: ratio "
        f"{r['p50_quiet_ms'] / r['p50_one_more_busy_ms']:.2f} (goal: <= 1)",
        f"agent: load {r['load_status']}, site-d answered ({r['site_d_detections']} "
        f"detections), unload {r['unload_status']}",
        f"RSS: before load {r['rss_before_mb']:.0f} MB, loaded {r['rss_loaded_mb']:.0f} MB, "
        f"after unload {r['rss_after_mb']:.0f} MB: {rss:.2f}x before (goal: <= 1.10)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the report; ``--out`` writes the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.multi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-multi-logs-") as logs:
        report = run(args.clients, args.duration, Path(logs), extra)
    print(format_report(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
