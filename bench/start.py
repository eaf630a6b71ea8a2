"""What a pod costs, the torch image against the light one: ``python -m bench.start``.

``make bench-start``. For each image (both serving the demo detector with their default
command, ``--read-only --tmpfs /tmp`` as in a pod):

- **image MB**: ``docker image inspect``'s size;
- **ready s**: ``docker run`` to ``/v2/health/ready`` answering 200, the median of
  ``--starts`` starts (the first start on a machine pays for page-cache misses);
- **img/s @8**: V2 binary at ``--clients`` clients on one 640x480 JPEG;
- **server CPU ms/img**: the container's CPU time over the images it served;
- **RSS MB**: the server's resident memory after the warm-up and ``--requests`` requests.

Beside them, the **bare compiled path**: in this process, one thread, the server's own
decode, the compiled graph and the numpy post-processing, CPU ms per picture: what a
light server cannot avoid (the goal: server CPU per image at most 1.15x that).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from client.loadgen import Target, run_cell

from . import docker_util as dk

HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cpus", "2")


def picture() -> bytes:
    """One 640x480 JPEG of smooth noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR).save(
        out, format="JPEG", quality=90)
    return out.getvalue()


def start(image: str) -> tuple[str, str, str, float]:
    """Runs the image; (name, http url, grpc target, seconds to ready)."""
    name = f"bench-start-{uuid.uuid4().hex[:8]}"
    begin = time.monotonic()
    dk.docker("run", "-d", "--name", name, "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081",
              *HARDENED, image)
    http = f"http://{dk.port(name, 8080)}"
    while time.monotonic() - begin < 300:
        try:
            if httpx.get(f"{http}/v2/health/ready", timeout=1).status_code == 200:
                return name, http, dk.port(name, 8081), time.monotonic() - begin
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{image} not ready after 300 s:\n{dk.logs(name)}")


def measure(image: str, starts: int, clients: int, requests: int, duration: float
            ) -> dict[str, Any]:
    """One image's figures."""
    row: dict[str, Any] = {"image": image, "image_mb": dk.image_mb(image)}
    ready = []
    for _ in range(starts - 1):
        name, *_rest, seconds = start(image)
        ready.append(seconds)
        dk.remove(name)
    name, http, grpc, seconds = start(image)
    ready.append(seconds)
    row["ready_s"] = statistics.median(ready)
    row["ready_s_each"] = [round(r, 2) for r in ready]
    try:
        data = picture()
        target = Target(url=http, grpc_target=grpc)
        asyncio.run(run_cell(target, "v2bin", clients, [data], duration=None,
                             requests=requests, warmup=2.0))
        row["rss_mb"] = dk.rss_mb(name)
        cpu = dk.cpu_seconds(name)
        cell = asyncio.run(run_cell(target, "v2bin", clients, [data], duration=duration,
                                    warmup=2.0))
        spent = dk.cpu_seconds(name) - cpu
        row["img_per_s"] = cell.img_per_s
        served = cell.images * (duration + 2.0) / duration
        row["server_cpu_ms"] = spent / max(served, 1) * 1000
    finally:
        dk.remove(name)
    return row


def bare_compiled_ms(folder: Path, seconds: float) -> float:
    """CPU ms per picture: the server's decode and compiled engine, one thread."""
    from predictor.config import ModelConfig
    from predictor.pipeline.decode import ImageLimits, decode_for_model
    from predictor.pipeline.engines import CompiledEngine

    engine = CompiledEngine(ModelConfig(model_dir=str(folder), device="cpu", torch_threads=1,
                                        cache_dir=""))
    engine.load()
    shrink = engine.shrink_target()
    data = picture()
    done = 0
    begin_cpu, deadline = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < deadline or done < 10:
        engine.run([decode_for_model(data, ImageLimits(), shrink)])
        done += 1
    return (time.process_time() - begin_cpu) / done * 1000


def format_table(rows: Sequence[dict[str, Any]], bare_ms: float, clients: int) -> str:
    """The table (Markdown), ratios light / torch."""
    lines = [f"| image | MB | ready s (each) | img/s @{clients} | server CPU ms/img | RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['image_mb']:.0f} | {r['ready_s']:.2f} "
                     f"({', '.join(map(str, r['ready_s_each']))}) | {r['img_per_s']:.1f} | "
                     f"{r['server_cpu_ms']:.1f} | {r['rss_mb']:.0f} |")
    if len(rows) == 2:
        torch, light = rows
        lines += ["", f"light / torch: size {light['image_mb'] / torch['image_mb']:.3f}x, "
                  f"ready {light['ready_s'] / torch['ready_s']:.2f}x, img/s "
                  f"{light['img_per_s'] / torch['img_per_s']:.2f}x, RSS "
                  f"{light['rss_mb'] / torch['rss_mb']:.2f}x"]
    lines.append(f"bare compiled path (one thread): {bare_ms:.1f} CPU ms/picture; light "
                 f"server / bare: {rows[-1]['server_cpu_ms'] / bare_ms:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the table; ``--out`` writes the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-image", default="kserve-detector:latest")
    parser.add_argument("--light-image", default="kserve-detector-light:latest")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for image in (args.torch_image, args.light_image):
        if not dk.exists(image):
            parser.error(f"no image {image}: build it (make image / make image-light)")
    rows = []
    for image in (args.torch_image, args.light_image):
        print(f"measuring {image}", file=sys.stderr, flush=True)
        rows.append(measure(image, args.starts, args.clients, args.requests, args.duration))
    with tempfile.TemporaryDirectory() as tmp:
        from predictor.export import export

        export(Path(__file__).resolve().parents[1] / "predictor" / "demo" / "model",
               Path(tmp) / "compiled")
        bare = bare_compiled_ms(Path(tmp) / "compiled", 10.0)
    print(format_table(rows, bare, args.clients))
    if args.out:
        args.out.write_text(json.dumps({"images": rows, "bare_compiled_ms": bare}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
