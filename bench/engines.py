"""The CPU engines side by side in one run: the bare engine per image, and a server each.

For each engine (eager, OpenVINO fp32 / bf16 / int8 / auto):

- **bare engine**: in this process, one picture at a time through the server's own
  decode (draft decoding included) and :class:`predictor.pipeline.engine.Engine`, one
  thread: CPU milliseconds per image (the work a server cannot avoid);
- **server**: ``python -m predictor`` with that engine, V2 binary at ``--clients``
  clients (images/s, and the server's CPU time per image read from ``/proc``) and at one
  client (p50); start-to-ready and resident memory after the warm-up.

Rounds are interleaved (every engine once per round) and the median round is shown,
with the spread, so a busy machine shifts all engines alike. ``server cpu / bare`` is the
server's overhead as a ratio (the goal: at most 1.25).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import launch
from client.loadgen import Target, run_cell

log = logging.getLogger(__name__)

ENGINE_FLAGS: dict[str, list[str]] = {
    "eager": ["--no_cpu_accel"],
    "openvino-fp32": ["--cpu_precision", "fp32"],
    "openvino-bf16": ["--cpu_precision", "bf16"],
    "openvino-int8": ["--cpu_precision", "int8"],  # + --calibration_dir
    "openvino": [],  # the default: auto precision
}
DEFAULT_ENGINES = ("eager", "openvino-fp32", "openvino")


@dataclass
class EngineRow:
    """One engine's figures, a list per measure (one value per round)."""

    name: str
    bare_ms: list[float] = field(default_factory=list)
    img_per_s: list[float] = field(default_factory=list)
    server_cpu_ms: list[float] = field(default_factory=list)
    p50_1_ms: list[float] = field(default_factory=list)
    ready_s: float | None = None
    rss_mb: float | None = None
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Medians, spreads and the raw rounds."""
        out: dict[str, Any] = {"engine": self.name, "ready_s": self.ready_s,
                               "rss_mb": self.rss_mb, "cpu_path": self.summary}
        for key in ("bare_ms", "img_per_s", "server_cpu_ms", "p50_1_ms"):
            values = getattr(self, key)
            out[key] = statistics.median(values) if values else None
            out[f"{key}_rounds"] = values
        if out["bare_ms"] and out["server_cpu_ms"]:
            out["server_over_bare"] = out["server_cpu_ms"] / out["bare_ms"]
        return out


def engine_flags(name: str, calibration_dir: str | None) -> list[str]:
    """Server flags for an engine name; int8 needs pictures to calibrate on."""
    flags = list(ENGINE_FLAGS[name])
    if calibration_dir:
        flags += ["--calibration_dir", calibration_dir]
    elif name == "openvino-int8":
        raise SystemExit("--engines openvino-int8 needs --calibration-dir")
    return flags


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


class Bare:
    """One engine in this process, fed one picture at a time as the server feeds it."""

    def __init__(self, model_dir: str, flags: list[str]) -> None:
        from predictor.config import ModelConfig
        from predictor.pipeline.engine import Engine

        parser = argparse.ArgumentParser()
        from predictor.config import add_arguments

        add_arguments(parser)
        ns = parser.parse_args(["--model_dir", model_dir, "--device", "cpu",
                                "--torch_threads", "1", *flags])
        cfg = ModelConfig(**{k: getattr(ns, k) for k in ModelConfig.__dataclass_fields__})
        self.engine = Engine(cfg)
        self.engine.load()
        self.shrink = self.engine.shrink_target() if cfg.draft_decode else None

    def per_image_ms(self, images: Sequence[bytes], seconds: float) -> float:
        """CPU milliseconds per image: decode + engine, one picture per call."""
        from predictor.pipeline.decode import ImageLimits, decode_for_model

        limits = ImageLimits()
        done = 0
        start_cpu, deadline = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < deadline or done < len(images):
            data = images[done % len(images)]
            self.engine.run([decode_for_model(data, limits, self.shrink)])
            done += 1
        return (time.process_time() - start_cpu) / done * 1000


def compare(names: Sequence[str], model_dir: str, images: list[bytes], *, clients: int,
            rounds: int, duration: float, warmup: float, log_dir: Path,
            calibration_dir: str | None, env: dict[str, str] | None = None
            ) -> list[EngineRow]:
    """Measures every engine in interleaved rounds; one row per engine."""
    import torch

    rows = {n: EngineRow(n) for n in names}
    torch.set_num_threads(1)
    bare = {}
    for n in names:
        log.info("bare engine %s: loading", n)
        bare[n] = Bare(model_dir, engine_flags(n, calibration_dir))
        rows[n].summary = bare[n].engine.engine_report
    started: dict[str, launch.ServerProcess] = {}
    try:
        for n in names:
            log.info("server with engine %s: starting", n)
            begin = time.monotonic()
            started[n] = launch.start(
                "predictor", ["--model_dir", model_dir, "--max_batch_size", str(clients),
                              "--warmup_batch_sizes", f"1,{clients}",
                              *engine_flags(n, calibration_dir)], log_dir, env=env)
            rows[n].ready_s = round(time.monotonic() - begin, 1)
            rows[n].rss_mb = _rss_mb(started[n].proc.pid)
        for k in range(rounds):
            for n in names:
                rows[n].bare_ms.append(bare[n].per_image_ms(images, duration / 2))
                server = started[n]
                target = Target(url=server.url, grpc_target=server.grpc_target)
                cpu = _cpu_seconds(server.proc.pid)
                cell = asyncio.run(run_cell(target, "v2bin", clients, images,
                                            duration=duration, warmup=warmup))
                spent = _cpu_seconds(server.proc.pid) - cpu
                # warm-up requests are served too: count them by the time they took.
                served = cell.images * (duration + warmup) / duration
                rows[n].img_per_s.append(cell.img_per_s)
                rows[n].server_cpu_ms.append(spent / max(served, 1) * 1000)
                one = asyncio.run(run_cell(target, "v2bin", 1, images,
                                           duration=duration / 2, warmup=warmup / 2))
                rows[n].p50_1_ms.append(one.p50_ms)
                log.info("round %d %s: bare %.1f ms/img, %.1f img/s, server cpu %.1f ms/img, "
                         "p50 1 client %.0f ms", k + 1, n, rows[n].bare_ms[-1],
                         cell.img_per_s, rows[n].server_cpu_ms[-1], one.p50_ms)
    finally:
        for server in started.values():
            server.stop()
    return [rows[n] for n in names]


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if values else "-"


def format_engines(rows: Sequence[EngineRow], clients: int, baseline: str) -> str:
    """The engines table (Markdown), ratios against ``baseline``'s images/s."""
    table = [r.to_dict() for r in rows]
    base = next((t["img_per_s"] for t in table if t["engine"] == baseline), None)
    base_p50 = next((t["p50_1_ms"] for t in table if t["engine"] == baseline), None)
    lines = [
        f"| engine | bare engine ms/img (cpu) | server img/s @{clients} (spread) | vs "
        f"{baseline} | p50 @1 ms | vs {baseline} | server cpu ms/img | server / bare | "
        "ready s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, t in zip(rows, table, strict=True):
        ratio = t["img_per_s"] / base if base and t["img_per_s"] else None
        p50_ratio = t["p50_1_ms"] / base_p50 if base_p50 and t["p50_1_ms"] else None
        lines.append(
            f"| {t['engine']} | {_f(t['bare_ms'])} | {_f(t['img_per_s'])} "
            f"({_spread(row.img_per_s)}) | {_f(ratio, 2)} | {_f(t['p50_1_ms'], 0)} | "
            f"{_f(p50_ratio, 2)} | {_f(t['server_cpu_ms'])} | "
            f"{_f(t.get('server_over_bare'), 2)} | {_f(t['ready_s'])} | {_f(t['rss_mb'], 0)} |")
    lines += ["", "CPU path per engine:"] + [f"- {r.name}: {r.summary or 'eager'}" for r in rows]
    return "\n".join(lines)
