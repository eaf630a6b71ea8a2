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
from pathlib import Path
from typing import Any

import launch
from client.loadgen import CellResult, Target, generated_images, metric_totals, run_cell
from predictor.pipeline.engine import pick_device

from . import engines
from . import raw as rawloop
from .report import (
    GOAL_CLIENTS,
    GOAL_PROTOCOL,
    PROFILE_METRICS,
    RawResult,
    build_rows,
    format_report,
    goals,
    stage_profile,
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
    e.add_argument("--engines", default=",".join(engines.DEFAULT_ENGINES),
                   help="CPU engines compared side by side after the main table, e.g. "
                        "eager,openvino-fp32,openvino-bf16,openvino-int8,openvino; "
                        "'none' to skip (default %(default)s)")
    e.add_argument("--engine-rounds", type=int, default=3,
                   help="interleaved rounds of the engines table (default 3)")
    e.add_argument("--calibration-dir", default=None,
                   help="pictures for openvino-int8 (python -m demo.synthetic writes some)")
    r.add_argument("--log-dir", default=None, help="keep the servers' logs here")
    r.add_argument("--out", default=None, help="write the results as JSON here")
    return p


def _scrape(target: Target) -> dict[str, float]:
    import httpx

    try:
        text = httpx.get(f"{target.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return metric_totals(text, PROFILE_METRICS)


def _cells(target: Target, system: str, protocols: Sequence[str], clients: Sequence[int],
           images: list[bytes], args: argparse.Namespace, batch: int,
           profiles: list[dict[str, Any]] | None = None) -> list[CellResult]:
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


def _plan_line(log_dir: Path) -> str:
    """Our server's start-up line naming its workers and threads, and why."""
    for path in sorted(log_dir.glob("predictor-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "inference worker(s) x" in line:
                return line.split("INFO", 1)[-1].split("]", 1)[-1].strip()
    return ""


def _threads_of(plan_line: str) -> str | None:
    """``2 workers x 1`` from the plan line, for the table's threads column."""
    words = plan_line.split()
    if len(words) >= 5 and words[1].startswith("inference"):
        return f"{words[0]}w x {words[4]}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; exit status 1 when any request failed, 2 when a server failed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return _run(args)
    except launch.ServerFailed as exc:
        log.error("%s", exc)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    started = time.monotonic()
    device = pick_device(args.device).type
    clients = args.clients or ([1, 8] if device == "cpu" else [1, 8, 32])
    batch_sizes = args.batch_sizes or ([1, 8] if device == "cpu" else [1, 8, 32])
    w, h = args.image_size
    env = dict(args.server_env)
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    server_batch = {n: args.max_batch_size or min(n, max(batch_sizes)) for n in clients}
    raw_sizes = sorted(set(batch_sizes) | set(server_batch.values()))
    raw_threads: list[int | None] = [None] if default_threads == 1 else [None, 1]
    ready_s: dict[str, float] = {}
    # The headline: what the goals compare, measured again in interleaved rounds.
    head_clients = GOAL_CLIENTS if GOAL_CLIENTS in clients else max(clients)
    head_batch = server_batch[head_clients]
    head_protocol = GOAL_PROTOCOL if GOAL_PROTOCOL in args.protocols else args.protocols[0]

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(args.log_dir) if args.log_dir else Path(tmp) / "logs"
        choice = rawloop.choose_model(Path(tmp), args.weights, args.architecture,
                                      args.num_classes, args.model_dir)
        log.info("model %s, weights %s, device %s%s; %d pictures %dx%d", choice.architecture,
                 choice.weights, device, " fp16" if args.fp16 else "", args.images, w, h)
        images = generated_images(args.images, (w, h), seed=2024)
        cuda = ["--device", device] + (["--fp16"] if args.fp16 else [])
        raw: list[RawResult] = []
        plain: list[CellResult] = []
        ours: list[tuple[int, CellResult]] = []
        profiles: list[dict[str, Any]] = []
        plan_line = ""
        series = Series()
        plain_target: Target | None = None
        ours_target: Target | None = None

        def start(name: str, module: str, flags: list[str]) -> launch.ServerProcess:
            begin = time.monotonic()
            server = launch.start(module, flags, log_dir, env=env)
            ready_s[name] = round(time.monotonic() - begin, 1)
            return server

        def target_of(server: launch.ServerProcess) -> Target:
            return Target(url=server.url, grpc_target=server.grpc_target)

        def measure_raw(sizes: Sequence[int]) -> list[RawResult]:
            found = rawloop.measure(choice.model_dir, images, sizes, device=device,
                                    fp16=args.fp16, duration=args.raw_duration,
                                    threads=raw_threads)
            if device == "cuda":
                torch.cuda.empty_cache()  # the model is gone; leave the servers the memory
            return found

        if "raw" in args.systems:
            log.info("raw loop: batch sizes %s at %d (torch's default) and 1 thread(s), "
                     "%.0f s each", raw_sizes, default_threads, args.raw_duration)
            raw = measure_raw(raw_sizes)
        if "plain" in args.systems:
            log.info("plain KServe predictor: starting")
            server = start("plain", "bench.plain",
                           ["--model_dir", str(choice.model_dir), *cuda])
            stack.callback(server.stop)  # kept for the rounds
            plain_target = target_of(server)
            plain = _cells(plain_target, "plain", ["v1"], clients, images, args, 1)
        if "ours" in args.systems:
            for batch in sorted(set(server_batch.values())):
                group = [n for n in clients if server_batch[n] == batch]
                log.info("our predictor, --max_batch_size %d: starting", batch)
                flags = ["--model_dir", str(choice.model_dir), *cuda, "--max_batch_size",
                         str(batch), "--warmup_batch_sizes", f"1,{batch}", *args.server_arg]
                server = start(f"ours, max batch {batch}", "predictor", flags)
                stack.callback(server.stop)
                target = target_of(server)
                plan_line = plan_line or _plan_line(log_dir)
                ours += [(batch, c) for c in _cells(target, "ours", args.protocols, group,
                                                     images, args, batch, profiles)]
                if batch == head_batch:
                    ours_target = target  # kept for the rounds
                else:
                    server.stop()  # leave the machine to the others

        def pick(cells: Sequence[CellResult], protocol: str) -> CellResult | None:
            return next((c for c in cells if c.clients == head_clients
                         and c.protocol == protocol), None)

        series.add([r for r in raw if r.batch == head_batch], pick(plain, "v1"),
                   pick([c for _, c in ours], head_protocol))
        for k in range(args.rounds):
            log.info("headline round %d of %d: raw batch %d, plain and ours at %d clients",
                     k + 2, args.rounds + 1, head_batch, head_clients)
            again_raw = measure_raw([head_batch]) if raw else []
            again_plain = (asyncio.run(run_cell(plain_target, "v1", head_clients, images,
                                                duration=args.duration, warmup=args.warmup))
                           if plain_target else None)
            again_ours = None
            if ours_target is not None:
                again_ours = _cells(ours_target, "ours", [head_protocol], [head_clients],
                                    images, args, head_batch, profiles)[0]
            series.add(again_raw, again_plain, again_ours)
        replace_by_median(raw, plain, ours, series, head_batch, head_clients, head_protocol)
        stack.close()

        rows = build_rows(raw, plain, ours, _threads_of(plan_line))
        paired = median_ratios(series)
        for row in rows:
            if (row["system"] == "ours" and row.get("clients") == head_clients
                    and row["protocol"] == head_protocol):
                row.update(paired)  # the median of the per-round ratios
        checked = goals(rows, raw)
        first = raw[0] if raw else None
        meta = {
            "architecture": choice.architecture, "weights": choice.weights,
            "model_dir": str(choice.model_dir), "device": device, "fp16": args.fp16,
            "torch": torch.__version__, "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)), "torch_threads": default_threads,
            "load": f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}",
            "ours_plan": plan_line, "start_to_ready_s": ready_s,
            "images": args.images, "image_size": f"{w}x{h}",
            "image_source": "client.loadgen.generated_images: shapes on gradients, JPEG q90",
            "score_threshold": 0.5,
            "detections_per_image": first.detections_per_image if first else None,
            "model_detections_per_image": first.model_detections_per_image if first else None,
            "duration_s": args.duration, "warmup_s": args.warmup, "clients": clients,
            "protocols": args.protocols, "server_batch": server_batch,
            "server_args": args.server_arg, "server_env": env,
            "headline": {"clients": head_clients, "batch": head_batch,
                         "protocol": head_protocol, "rounds": len(series.ours) or None},
            "total_seconds": round(time.monotonic() - started, 1),
        }
        print(format_report(meta, rows, checked, profiles))
        engine_rows: list[dict[str, Any]] = []
        names = [n for n in args.engines.split(",") if n and n != "none"]
        unknown = [n for n in names if n not in engines.ENGINE_FLAGS]
        if unknown:
            raise SystemExit(f"--engines: unknown {unknown}; known: "
                             f"{', '.join(engines.ENGINE_FLAGS)}")
        if names and device == "cpu":
            found = engines.compare(names, str(choice.model_dir), images,
                                    clients=head_clients, rounds=args.engine_rounds,
                                    duration=args.duration, warmup=args.warmup,
                                    log_dir=log_dir, calibration_dir=args.calibration_dir,
                                    env=env)
            engine_rows = [r.to_dict() for r in found]
            print(f"\n## CPU engines ({args.engine_rounds} interleaved rounds, median; load "
                  f"{os.getloadavg()[0]:.2f})\n")
            print(engines.format_engines(found, head_clients, names[0]))
        if args.out:
            doc = {"meta": meta, "raw": [r.to_dict() for r in raw],
                   "plain": [c.to_dict() for c in plain],
                   "ours": [{"max_batch_size": b, **c.to_dict()} for b, c in ours],
                   "rows": rows, "rounds": series.to_dict(), "profiles": profiles,
                   "goals": checked, "engines": engine_rows}
            Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            log.info("wrote %s", args.out)
        log.info("done in %.0f s", time.monotonic() - started)
    return 1 if any(r.get("errors") for r in rows) else 0
