"""The detectors people fine-tune, eager against the CPU engine: ``python -m bench.archs``.

For each architecture (random weights, a model folder written the way training writes
one, the server's default flags otherwise):

- **per picture**: one 640x480 JPEG at a time through the server's decode and
  :class:`predictor.pipeline.engine.Engine`, eager (``--no_cpu_accel``) and on the
  engine, wall milliseconds with one thread per CPU; rounds interleaved, the median
  shown;
- **server**: ``python -m predictor`` eager and on the engine, V2 binary at ``--clients``
  clients (images/s).

``--shapes ARCH`` adds what new picture shapes cost on one architecture: start to ready
(eager, the engine with a cold cache, then a warm one), the first picture of each of 8
shapes against the same picture again, and resident memory after them (twice each).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import launch

from .engines import Bare, _rss_mb

log = logging.getLogger(__name__)

ARCHS = ("retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
         "fasterrcnn_mobilenet_v3_large_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large")
LABELS = ["__background__", "a", "b", "c", "d"]
# Camera-like sizes, each its own aspect ratio (so its own input shape), (height, width).
SHAPES = ((480, 640), (1080, 1920), (640, 480), (1000, 1000), (480, 1000), (600, 900),
          (900, 600), (500, 1200))


def picture(height: int, width: int, seed: int = 0) -> bytes:
    """A JPEG of smooth noise (compresses like a photo, decodes at full cost)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def model_folder(root: Path, arch: str) -> Path:
    """A random-weights model folder for ``arch`` (written once per run)."""
    import torch
    import torchvision

    from predictor.pipeline.loader import save_model_folder

    folder = root / arch
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                             num_classes=len(LABELS))
        save_model_folder(folder, model.state_dict(), arch, LABELS)
    return folder


def _wall_ms(bare: Bare, data: bytes, rounds: int) -> float:
    from predictor.pipeline.decode import ImageLimits, decode_for_model

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        bare.engine.run([decode_for_model(data, ImageLimits(), bare.shrink)])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def per_picture(arch: str, folder: Path, cache: Path, rounds: int) -> dict[str, Any]:
    """Eager and engine wall ms per 640x480 picture, interleaved; the engine's log line."""
    data = picture(480, 640)
    threads = ["--torch_threads", str(len(os.sched_getaffinity(0)))]
    eager = Bare(str(folder), ["--no_cpu_accel", *threads])
    engine = Bare(str(folder), ["--cache_dir", str(cache), *threads])
    _wall_ms(eager, data, 1)
    _wall_ms(engine, data, 1)
    backbone: Any = getattr(getattr(engine.engine.loaded, "module", None), "backbone", None)
    graphs: Any = getattr(backbone, "graphs", None)
    if hasattr(graphs, "wait"):
        graphs.wait(600)  # the background compile of the 16:9 shape: not measured
    eager_ms, engine_ms = [], []
    for _ in range(rounds):
        eager_ms.append(_wall_ms(eager, data, 2))
        engine_ms.append(_wall_ms(engine, data, 3))
    return {"arch": arch, "eager_ms": statistics.median(eager_ms),
            "engine_ms": statistics.median(engine_ms), "engine": engine.engine.name,
            "cpu_path": engine.engine.engine_report}


def server_rate(folder: Path, flags: Sequence[str], clients: int, duration: float,
                log_dir: Path) -> float:
    """Images/s of a server at ``clients`` clients, V2 binary, one 640x480 picture."""
    from client.loadgen import Target, run_cell

    server = launch.start("predictor", ["--model_dir", str(folder), *flags], log_dir)
    try:
        target = Target(url=server.url, grpc_target=server.grpc_target)
        cell = asyncio.run(run_cell(target, "v2bin", clients, [picture(480, 640)],
                                    duration=duration, warmup=max(2.0, duration / 4)))
        return float(cell.img_per_s)
    finally:
        server.stop()


def shapes_and_start(arch: str, folder: Path, root: Path, log_dir: Path) -> dict[str, Any]:
    """Start to ready (eager, cold cache, warm cache), first vs warm picture per new shape,
    RSS after the 8 shapes twice (engine and eager)."""
    from client import DetectionClient

    cache = root / f"shapes-cache-{arch}"
    out: dict[str, Any] = {"arch": arch}
    pictures = [picture(h, w, seed=i) for i, (h, w) in enumerate(SHAPES)]
    for name, flags in (("eager", ["--no_cpu_accel"]), ("cold", ["--cache_dir", str(cache)]),
                        ("warm", ["--cache_dir", str(cache)])):
        begin = time.monotonic()
        server = launch.start("predictor", ["--model_dir", str(folder), *flags], log_dir)
        out[f"ready_s_{name}"] = time.monotonic() - begin
        try:
            if name == "cold":
                continue
            first: list[float] = []
            again: list[float] = []
            with DetectionClient(server.url, timeout=300) as client:
                for data in pictures:
                    for into in (first, again):
                        start = time.perf_counter()
                        client.detect(data)
                        into.append(time.perf_counter() - start)
                for data in pictures:
                    client.detect(data)
            out[f"rss_mb_{name}"] = _rss_mb(server.proc.pid)
            out[f"first_ms_{name}"] = [round(t * 1000) for t in first]
            out[f"again_ms_{name}"] = [round(t * 1000) for t in again]
        finally:
            server.stop()
    warm_first, warm_again = out["first_ms_warm"], out["again_ms_warm"]
    out["worst_first_over_again"] = max(f / a for f, a in zip(warm_first, warm_again,
                                                              strict=True))
    return out


def format_table(rows: Sequence[dict[str, Any]], clients: int) -> str:
    """The architectures table (Markdown)."""
    lines = [f"| architecture | eager ms/picture | engine ms/picture | engine / eager | "
             f"eager img/s @{clients} | engine img/s @{clients} | ratio | engine |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['eager_ms']:.0f} | {r['engine_ms']:.0f} | "
            f"{r['eager_ms'] / r['engine_ms']:.1f}x | {r.get('eager_ips', 0):.2f} | "
            f"{r.get('engine_ips', 0):.2f} | "
            f"{r.get('engine_ips', 0) / max(r.get('eager_ips', 0), 1e-9):.1f}x | {r['engine']} |")
    return "\n".join(lines)


def format_shapes(s: dict[str, Any]) -> str:
    """The new-shapes figures (Markdown)."""
    return "\n".join([
        f"New shapes on {s['arch']} (8 picture shapes, each sent twice):",
        "",
        "| | eager | engine, cold cache | engine, warm cache |",
        "|---|---|---|---|",
        f"| start to ready s | {s['ready_s_eager']:.1f} | {s['ready_s_cold']:.1f} | "
        f"{s['ready_s_warm']:.1f} |",
        f"| RSS after the pictures MB | {s['rss_mb_eager']:.0f} | - | {s['rss_mb_warm']:.0f} |",
        f"| first picture of a shape ms | {s['first_ms_eager']} | - | {s['first_ms_warm']} |",
        f"| the same picture again ms | {s['again_ms_eager']} | - | {s['again_ms_warm']} |",
        "",
        f"Worst first / again on the engine: {s['worst_first_over_again']:.2f}x; RSS engine / "
        f"eager: {s['rss_mb_warm'] / s['rss_mb_eager']:.2f}x; warm start - eager start: "
        f"{s['ready_s_warm'] - s['ready_s_eager']:+.1f} s.",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints the tables and writes them as JSON with ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.archs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS),
                        help="comma-separated torchvision builders (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds per server measurement")
    parser.add_argument("--no-server", action="store_true", help="per picture only")
    parser.add_argument("--shapes", metavar="ARCH", default="retinanet_resnet50_fpn_v2",
                        help="architecture for the new-shapes figures ('' for none)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(archs) - set(ARCHS))
    if unknown:
        parser.error(f"--archs: unknown {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-archs-") as tmp:
        root = Path(tmp)
        rows = []
        for arch in archs:
            folder = model_folder(root, arch)
            log.info("%s: per picture", arch)
            row = per_picture(arch, folder, root / "cache", args.rounds)
            if not args.no_server:
                for key, flags in (("eager_ips", ["--no_cpu_accel"]),
                                   ("engine_ips", ["--cache_dir", str(root / "cache")])):
                    log.info("%s: server %s", arch, key)
                    row[key] = server_rate(folder, [*flags, "--max_batch_size",
                                                    str(args.clients)],
                                           args.clients, args.duration, root / "logs")
            rows.append(row)
            print(format_table(rows[-1:], args.clients), flush=True)
        print("\n" + format_table(rows, args.clients))
        for r in rows:
            print(f"- {r['arch']}: {r['cpu_path']}")
        shapes = None
        if args.shapes:
            folder = model_folder(root, args.shapes)
            shapes = shapes_and_start(args.shapes, folder, root, root / "logs")
            print("\n" + format_shapes(shapes))
    if args.out:
        args.out.write_text(json.dumps({"archs": rows, "shapes": shapes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
