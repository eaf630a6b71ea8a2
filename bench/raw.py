"""The limit: the detector called directly on preloaded tensors, and the model choice.

No HTTP, no decoding, no batcher: a batch of decoded images already on the device,
run in a loop under ``torch.inference_mode`` (and fp16 autocast when asked), exactly
as built by the server's loader, so the internal score cut and detection cap match.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.loadgen import percentile
from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline.engine import pick_device
from predictor.pipeline.loader import load_model, save_model_folder

from .report import RawResult

log = logging.getLogger(__name__)

DEMO_ARCHITECTURE = "ssdlite320_mobilenet_v3_large"


@dataclass(frozen=True)
class ModelChoice:
    """The model folder the benchmark serves, and how to describe it."""

    model_dir: Path
    architecture: str
    weights: str  # "demo (trained)", "random (seed 0)" or the folder


def demo_available() -> bool:
    """Whether the trained demo detector is in ``predictor/demo/model``."""
    return (DEMO_MODEL_DIR / "config.json").is_file() and any(
        p.suffix in (".safetensors", ".pt", ".pth") for p in DEMO_MODEL_DIR.iterdir())


def choose_model(work: Path, weights: str, architecture: str | None, num_classes: int,
                 model_dir: str | None) -> ModelChoice:
    """``--model_dir`` as given; else the demo detector; else random weights saved in ``work``.

    Args:
        weights: ``auto`` (demo when present and the architecture matches, else random),
            ``demo`` or ``random``.
    """
    if model_dir:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return ModelChoice(Path(model_dir), str(config.get("architecture")), f"from {model_dir}")
    wants_demo = weights == "demo" or (
        weights == "auto" and architecture in (None, DEMO_ARCHITECTURE) and demo_available())
    if wants_demo:
        if not demo_available():
            raise SystemExit(f"--weights demo: no trained detector in {DEMO_MODEL_DIR}")
        config = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
        return ModelChoice(DEMO_MODEL_DIR, str(config["architecture"]), "demo (trained)")
    arch = architecture or DEMO_ARCHITECTURE
    return ModelChoice(save_random_model(work / "random-model", arch, num_classes), arch,
                       "random (seed 0)")


def save_random_model(folder: Path, architecture: str, num_classes: int, seed: int = 0) -> Path:
    """Writes a random-weights detector (``model.pt`` state_dict) in the served layout."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                         num_classes=num_classes)
    labels = ["__background__", *(f"class_{i}" for i in range(1, num_classes))]
    save_model_folder(folder, model.state_dict(), architecture, labels, fmt="pt")
    return folder


def _percentile_ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1000.0


def measure(model_dir: Path, images: Sequence[bytes], batch_sizes: Sequence[int], *,
            device: str = "auto", fp16: bool = False, duration: float = 5.0,
            min_iterations: int = 2, warmup_calls: int = 3, score_threshold: float = 0.5,
            threads: Sequence[int | None] = (None,)) -> list[RawResult]:
    """Images/s of the bare model at each batch size, at each intra-op thread count.

    ``threads``: None is torch's own default. For each batch size the thread counts run
    one after the other, so a change of load on a shared machine hits them alike.
    ``warmup_calls`` untimed calls at batch 1 come first (they pay for kernel selection
    and allocations), then one untimed call at each batch size and thread count. The
    loop runs in a worker thread, as the server's inference does, so both get the same
    kind of malloc arena (glibc may hand freed activations back to the OS after each
    call and fault them in again: thousands of page faults per image, depending on the
    arena).
    """
    default = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw") as pool:
            return pool.submit(_measure, model_dir, images, batch_sizes, device, fp16,
                               duration, min_iterations, warmup_calls, score_threshold,
                               [(t or default, t is None) for t in threads]).result()
    finally:
        torch.set_num_threads(default)


def _measure(model_dir: Path, images: Sequence[bytes], batch_sizes: Sequence[int],
             device: str, fp16: bool, duration: float, min_iterations: int,
             warmup_calls: int, score_threshold: float, threads: Sequence[tuple[int, bool]]
             ) -> list[RawResult]:
    from PIL import Image

    dev = pick_device(device)
    module = load_model(ModelConfig(model_dir=str(model_dir), device=device)).module
    module = module.eval().to(dev)
    tensors = []
    for data in images:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
        tensors.append(torch.from_numpy(pixels).permute(2, 0, 1).to(dev).float().div_(255.0))
    autocast = (torch.autocast("cuda", dtype=torch.float16) if fp16 and dev.type == "cuda"
                else contextlib.nullcontext())

    def call(batch: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        with torch.inference_mode(), autocast:
            out = module(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return list(out)

    for _ in range(warmup_calls):
        call(tensors[:1])
    results = []
    for size, (count, default) in [(s, t) for s in batch_sizes for t in threads]:
        torch.set_num_threads(count)
        # Each call takes the next pictures in turn, so every size sees all of them.
        batches = [[tensors[(k * size + i) % len(tensors)] for i in range(size)]
                   for k in range(len(tensors))]
        call(batches[0])
        times: list[float] = []
        start, cpu_start = time.perf_counter(), time.process_time()
        found = kept = 0
        while len(times) < min_iterations or time.perf_counter() - start < duration:
            t = time.perf_counter()
            outputs = call(batches[len(times) % len(batches)])
            times.append(time.perf_counter() - t)
            found += sum(len(o["scores"]) for o in outputs)
            kept += sum(int((o["scores"] >= score_threshold).sum()) for o in outputs)
        total = sum(times)
        cpu = (time.process_time() - cpu_start) / (time.perf_counter() - start)
        seen = size * len(times)
        results.append(RawResult(
            batch=size, iterations=len(times), seconds=total, img_per_s=seen / total,
            p50_ms=_percentile_ms(times, 50), p95_ms=_percentile_ms(times, 95),
            p99_ms=_percentile_ms(times, 99), detections_per_image=kept / seen,
            model_detections_per_image=found / seen, cpu=cpu, threads=count,
            default_threads=default))
        log.info("raw batch %d, %d thread(s): %.1f img/s (%d calls)", size, count,
                 seen / total, len(times))
    return results
