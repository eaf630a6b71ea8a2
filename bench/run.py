"""``python -m bench``: the raw model, a plain KServe predictor and ours, one run.

CPU, the defaults (about 3 minutes; the trained demo detector when present)::

    python -m bench --out bench.json

The raw loop runs at torch's default intra-op threads and at one thread, one after the
other for each batch size; ratios divide by the better of the two. Our server runs
with its default flags (``--server-arg`` adds some) and is profiled: where a request's
time goes, from its /metrics.

GPU (random weights; the same table at 1, 8 and 32 clients)::

    python -m bench --architecture fasterrcnn_resnet50_fpn_v2 --device cuda \\
        --fp16 --out bench-gpu.json

Every cell runs a warm-up, then a fixed duration; servers are started on free
127.0.0.1 ports and stopped after their cells. Our server is started once per
``--max_batch_size`` under test (by default the number of clients, up to the largest
``--batch-sizes``), and compared with the raw loop at that batch size.

A run is a sequence of phases (:func:`_run`), each a function of the :class:`Run` that
adds its results to it; every flag is checked before the first phase starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import launch
from client.loadgen import CellResult, Target, generated_images, run_cell
from predictor.pipeline.engine import pick_device

from . import engines
from . import raw as rawloop
from .cells import measure_cells
from .report import (
    GOAL_CLIENTS,
    GOAL_PROTOCOL,
    RawResult,
    build_rows,
    format_report,
    goals,
    plan_line,
    threads_of,
)
from .rounds import Series, median_ratios, replace_by_median

log = logging.getLogger("bench")

SYSTEMS = ("raw", "plain", "ours")


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text}")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 640x480, got {text}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"expected positive sides, got {text}")
    return w, h


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text}")
    return key, value


def _names(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [{"v2": "v2bin"}.get(v.strip(), v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text}")
        return values
    return parse


def _engines(text: str) -> list[str]:
    """``--engines``: checked when the flags are parsed, not after the main run."""
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in engines.ENGINE_FLAGS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown)}; choose from {', '.join(engines.ENGINE_FLAGS)} "
            f"or none")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, every one checked before anything is measured."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if "openvino-int8" in args.engines and not args.calibration_dir:
        parser.error("--engines openvino-int8 needs --calibration-dir (pictures to calibrate "
                     "on; python -m demo.synthetic writes some)")
    return args


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--weights", choices=("auto", "demo", "random"), default="auto",
                   help="auto: the trained demo detector when present (and the architecture "
                        "is its own), else random weights")
    m.add_argument("--architecture", default=None,
                   help="torchvision builder for random weights (default "
                        f"{rawloop.DEMO_ARCHITECTURE})")
    m.add_argument("--num_classes", type=int, default=91,
                   help="classes of a random-weights model, background included (default 91)")
    m.add_argument("--model_dir", default=None, help="benchmark this model folder instead")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    m.add_argument("--fp16", action="store_true", help="fp16 autocast on CUDA (all systems)")
    r = p.add_argument_group("run")
    r.add_argument("--systems", type=_names(SYSTEMS), default=list(SYSTEMS),
                   help="which of raw, plain, ours to measure (default all)")
    r.add_argument("--batch-sizes", type=_ints, default=None,
                   help="raw loop batch sizes (default 1,8 on CPU, 1,8,32 on CUDA)")
    r.add_argument("--clients", type=_ints, default=None,
                   help="concurrent clients (default 1,8 on CPU, 1,8,32 on CUDA)")
    r.add_argument("--protocols", type=_names(("v1", "v2bin", "grpc")),
                   default=["v1", "v2bin", "grpc"], help="ours: v1, v2bin, grpc (default all)")
    r.add_argument("--max-batch-size", type=int, default=None,
                   help="one server with this --max_batch_size for every cell (default: one "
                        "server per client count, max batch = clients)")
    r.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    r.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per cell")
    r.add_argument("--raw-duration", type=float, default=5.0,
                   help="seconds per raw batch size")
    r.add_argument("--rounds", type=int, default=2,
                   help="extra interleaved rounds of the headline comparison (raw, plain and "
                        "ours at 8 clients); the table shows the median round (default 2)")
    r.add_argument("--images", type=int, default=16, help="distinct pictures (default 16)")
    r.add_argument("--image-size", type=_size, default=(640, 480),
                   help="WxH (default 640x480)")
    r.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra flag for our server, e.g. --server-arg=--decode_threads=1")
    r.add_argument("--server-env", action="append", type=_key_value, default=[],
                   metavar="KEY=VALUE",
                   help="environment for both servers, e.g. MALLOC_ARENA_MAX=2")
    e = p.add_argument_group("engines (CPU)")
    e.add_argument("--engines", type=_engines, default=list(engines.DEFAULT_ENGINES),
                   help="CPU engines compared side by side after the main table, e.g. "
                        "eager,openvino-fp32,openvino-bf16,openvino-int8,openvino; "
                        f"'none' to skip (default {','.join(engines.DEFAULT_ENGINES)})")
    e.add_argument("--engine-rounds", type=int, default=3,
                   help="interleaved rounds of the engines table (default 3)")
    e.add_argument("--calibration-dir", default=None,
                   help="pictures for openvino-int8 (python -m demo.synthetic writes some)")
    r.add_argument("--log-dir", default=None, help="keep the servers' logs here")
    r.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; exit status 1 when any request failed, 2 when a server failed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return _run(args)
    except launch.ServerFailed as exc:
        log.error("%s", exc)
        return 2


@dataclass
class Run:
    """One benchmark run: what was asked, what is shared, and each phase's results."""

    args: argparse.Namespace
    device: str
    clients: list[int]
    server_batch: dict[int, int]  # clients -> our server's --max_batch_size
    raw_sizes: list[int]
    raw_threads: list[int | None]
    default_threads: int
    head_clients: int  # the headline: what the goals compare, in interleaved rounds
    head_batch: int
    head_protocol: str
    choice: rawloop.ModelChoice
    images: list[bytes]
    log_dir: Path
    stack: contextlib.ExitStack
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])
    ready_s: dict[str, float] = field(default_factory=dict)
    raw: list[RawResult] = field(default_factory=list)
    plain: list[CellResult] = field(default_factory=list)
    ours: list[tuple[int, CellResult]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    ours_plan: str = ""  # our server's start-up line: workers x threads
    series: Series = field(default_factory=Series)
    plain_target: Target | None = None
    ours_target: Target | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)  # the JSON written to --out

    @property
    def server_flags(self) -> list[str]:
        """Flags every server of the run gets: the model, the device."""
        return ["--model_dir", str(self.choice.model_dir), "--device", self.device,
                *(["--fp16"] if self.args.fp16 else [])]

    def start(self, name: str, module: str, flags: list[str]) -> launch.ServerProcess:
        """A server, stopped when the run's servers are; its start-to-ready time noted."""
        begin = time.monotonic()
        server = launch.start(module, flags, self.log_dir, env=self.env)
        self.stack.callback(server.stop)
        self.ready_s[name] = round(time.monotonic() - begin, 1)
        return server

    def raw_loop(self, sizes: Sequence[int]) -> list[RawResult]:
        """The raw loop at these batch sizes."""
        found = rawloop.measure(self.choice.model_dir, self.images, sizes, device=self.device,
                                fp16=self.args.fp16, duration=self.args.raw_duration,
                                threads=self.raw_threads)
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()  # the model is gone; leave the servers the memory
        return found


def _target(server: launch.ServerProcess) -> Target:
    return Target(url=server.url, grpc_target=server.grpc_target)


def _prepare(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> Run:
    import torch

    device = pick_device(args.device).type
    clients = args.clients or ([1, 8] if device == "cpu" else [1, 8, 32])
    batch_sizes = args.batch_sizes or ([1, 8] if device == "cpu" else [1, 8, 32])
    server_batch = {n: args.max_batch_size or min(n, max(batch_sizes)) for n in clients}
    default_threads = torch.get_num_threads()
    head_clients = GOAL_CLIENTS if GOAL_CLIENTS in clients else max(clients)
    w, h = args.image_size
    choice = rawloop.choose_model(tmp, args.weights, args.architecture, args.num_classes,
                                  args.model_dir)
    log.info("model %s, weights %s, device %s%s; %d pictures %dx%d", choice.architecture,
             choice.weights, device, " fp16" if args.fp16 else "", args.images, w, h)
    return Run(
        args=args, device=device, clients=clients, server_batch=server_batch,
        raw_sizes=sorted(set(batch_sizes) | set(server_batch.values())),
        raw_threads=[None] if default_threads == 1 else [None, 1],
        default_threads=default_threads, head_clients=head_clients,
        head_batch=server_batch[head_clients],
        head_protocol=GOAL_PROTOCOL if GOAL_PROTOCOL in args.protocols else args.protocols[0],
        choice=choice, images=generated_images(args.images, (w, h), seed=2024),
        log_dir=Path(args.log_dir) if args.log_dir else tmp / "logs", stack=stack,
        env=dict(args.server_env))


def measure_raw(run: Run) -> None:
    """The raw loop, at every batch size a server will use."""
    if "raw" in run.args.systems:
        log.info("raw loop: batch sizes %s at %d (torch's default) and 1 thread(s), "
                 "%.0f s each", run.raw_sizes, run.default_threads, run.args.raw_duration)
        run.raw = run.raw_loop(run.raw_sizes)


def measure_plain(run: Run) -> None:
    """A plain KServe predictor over V1 (kept running for the headline rounds)."""
    if "plain" in run.args.systems:
        log.info("plain KServe predictor: starting")
        server = run.start("plain", "bench.plain", run.server_flags)
        run.plain_target = _target(server)
        run.plain = measure_cells(run.plain_target, "plain", ["v1"], run.clients,
                                  run.images, run.args, 1)


def measure_ours(run: Run) -> None:
    """Our server, once per --max_batch_size under test, every protocol."""
    if "ours" not in run.args.systems:
        return
    for batch in sorted(set(run.server_batch.values())):
        group = [n for n in run.clients if run.server_batch[n] == batch]
        log.info("our predictor, --max_batch_size %d: starting", batch)
        flags = [*run.server_flags, "--max_batch_size", str(batch),
                 "--warmup_batch_sizes", f"1,{batch}", *run.args.server_arg]
        server = run.start(f"ours, max batch {batch}", "predictor", flags)
        target = _target(server)
        run.ours_plan = run.ours_plan or plan_line(run.log_dir)
        run.ours += [(batch, c) for c in measure_cells(
            target, "ours", run.args.protocols, group, run.images, run.args, batch,
            run.profiles)]
        if batch == run.head_batch:
            run.ours_target = target  # kept for the rounds
        else:
            server.stop()  # leave the machine to the others


def headline_rounds(run: Run) -> None:
    """The headline cells again, interleaved; each keeps its median round."""
    def pick(cells: Sequence[CellResult], protocol: str) -> CellResult | None:
        return next((c for c in cells if c.clients == run.head_clients
                     and c.protocol == protocol), None)

    args = run.args
    run.series.add([r for r in run.raw if r.batch == run.head_batch], pick(run.plain, "v1"),
                   pick([c for _, c in run.ours], run.head_protocol))
    for k in range(args.rounds):
        log.info("headline round %d of %d: raw batch %d, plain and ours at %d clients",
                 k + 2, args.rounds + 1, run.head_batch, run.head_clients)
        again_raw = run.raw_loop([run.head_batch]) if run.raw else []
        again_plain = (asyncio.run(run_cell(run.plain_target, "v1", run.head_clients,
                                            run.images, duration=args.duration,
                                            warmup=args.warmup))
                       if run.plain_target else None)
        again_ours = None
        if run.ours_target is not None:
            again_ours = measure_cells(run.ours_target, "ours", [run.head_protocol],
                                       [run.head_clients], run.images, args, run.head_batch,
                                       run.profiles)[0]
        run.series.add(again_raw, again_plain, again_ours)
    replace_by_median(run.raw, run.plain, run.ours, run.series, run.head_batch,
                      run.head_clients, run.head_protocol)


def report(run: Run) -> None:
    """The main table, the goals and the profile, printed and kept for the JSON."""
    import torch

    args = run.args
    run.rows = build_rows(run.raw, run.plain, run.ours, threads_of(run.ours_plan))
    paired = median_ratios(run.series)
    for row in run.rows:
        if (row["system"] == "ours" and row.get("clients") == run.head_clients
                and row["protocol"] == run.head_protocol):
            row.update(paired)  # the median of the per-round ratios
    checked = goals(run.rows, run.raw)
    first = run.raw[0] if run.raw else None
    w, h = args.image_size
    meta = {
        "architecture": run.choice.architecture, "weights": run.choice.weights,
        "model_dir": str(run.choice.model_dir), "device": run.device, "fp16": args.fp16,
        "torch": torch.__version__, "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)), "torch_threads": run.default_threads,
        "load": f"{run.load_before:.2f} -> {os.getloadavg()[0]:.2f}",
        "ours_plan": run.ours_plan, "start_to_ready_s": run.ready_s,
        "images": args.images, "image_size": f"{w}x{h}",
        "image_source": "client.loadgen.generated_images: shapes on gradients, JPEG q90",
        "score_threshold": 0.5,
        "detections_per_image": first.detections_per_image if first else None,
        "model_detections_per_image": first.model_detections_per_image if first else None,
        "duration_s": args.duration, "warmup_s": args.warmup, "clients": run.clients,
        "protocols": args.protocols, "server_batch": run.server_batch,
        "server_args": args.server_arg, "server_env": run.env,
        "headline": {"clients": run.head_clients, "batch": run.head_batch,
                     "protocol": run.head_protocol, "rounds": len(run.series.ours) or None},
        "total_seconds": round(time.monotonic() - run.started, 1),
    }
    print(format_report(meta, run.rows, checked, run.profiles))
    run.doc.update({
        "meta": meta, "raw": [r.to_dict() for r in run.raw],
        "plain": [c.to_dict() for c in run.plain],
        "ours": [{"max_batch_size": b, **c.to_dict()} for b, c in run.ours],
        "rows": run.rows, "rounds": run.series.to_dict(), "profiles": run.profiles,
        "goals": checked})


def compare_engines(run: Run) -> None:
    """The CPU engines side by side (``--engines``; CPU only)."""
    names = run.args.engines
    run.doc["engines"] = []
    if not names or run.device != "cpu":
        return
    found = engines.compare(names, str(run.choice.model_dir), run.images,
                            clients=run.head_clients, rounds=run.args.engine_rounds,
                            duration=run.args.duration, warmup=run.args.warmup,
                            log_dir=run.log_dir, calibration_dir=run.args.calibration_dir,
                            env=run.env)
    run.doc["engines"] = [r.to_dict() for r in found]
    print(f"\n## CPU engines ({run.args.engine_rounds} interleaved rounds, median; load "
          f"{os.getloadavg()[0]:.2f})\n")
    print(engines.format_engines(found, run.head_clients, names[0]))


def _run(args: argparse.Namespace) -> int:
    """The phases in order; a new phase is one more call here."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        run = _prepare(args, Path(tmp), stack)
        measure_raw(run)
        measure_plain(run)
        measure_ours(run)
        headline_rounds(run)
        stack.close()  # every server stops before the tables and the engines
        report(run)
        compare_engines(run)
        if args.out:
            Path(args.out).write_text(json.dumps(run.doc, indent=2) + "\n", encoding="utf-8")
            log.info("wrote %s", args.out)
        log.info("done in %.0f s", time.monotonic() - run.started)
    return 1 if any(r.get("errors") for r in run.rows) else 0
