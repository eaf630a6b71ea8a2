"""Train the embedded demo detector from scratch on synthetic shapes.

No pretrained weights can be downloaded where this project is built, so the demo model
(``ssdlite320_mobilenet_v3_large``, background + circle/square/triangle/star) is trained
here on pictures drawn on the fly by :mod:`demo.synthetic`::

    python -m demo.train --out /tmp/run --steps 1200 --batch-size 16 --seed 0

The output folder is a model directory the server can load: ``model.safetensors``,
``config.json`` and ``labels.txt``. ``checkpoint.pt`` (model, optimiser, schedule, step)
is rewritten every ``--checkpoint-every`` steps; ``--resume`` continues from it. Batch
``k`` depends only on ``(seed, k)``, so a resumed run sees the same data as an unbroken one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import detection
from tqdm import tqdm

from predictor.pipeline.default_boxes import apply_anchors
from predictor.pipeline.loader import save_model_folder

from .synthetic import CLASSES, make_sample, sample_size

log = logging.getLogger("demo.train")

ARCHITECTURE = "ssdlite320_mobilenet_v3_large"
NUM_CLASSES = len(CLASSES) + 1
# Serving settings baked into the model: torchvision's defaults (score 0.001, 300
# detections) make post-processing slow while scores are still diffuse, and the server
# applies each request's own score threshold on top of these.
MODEL_KWARGS: dict[str, Any] = {
    "score_thresh": 0.05,
    "detections_per_img": 100,
    "nms_thresh": 0.5,
    "topk_candidates": 300,
}
CHECKPOINT = "checkpoint.pt"
# The builder spreads its default boxes from 0.2 to 0.95 of the input side; only the low
# end moves (--anchor-min-ratio), the largest boxes stay as they are.
MAX_RATIO = 0.95


def anchors_for(min_ratio: float | None) -> dict[str, Any] | None:
    """config.json's ``anchors`` for ``--anchor-min-ratio`` (None: the builder's own)."""
    return None if min_ratio is None else {"min_ratio": min_ratio, "max_ratio": MAX_RATIO}


def build_model(
    model_kwargs: dict[str, Any] | None = None, anchors: dict[str, Any] | None = None
) -> nn.Module:
    """Build the untrained demo architecture exactly as the server rebuilds it."""
    builder = getattr(detection, ARCHITECTURE)
    kwargs = MODEL_KWARGS if model_kwargs is None else model_kwargs
    model: nn.Module = builder(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **kwargs
    )
    if anchors is not None:
        apply_anchors(model, anchors)
    return model


def make_batch(
    seed: int, step: int, batch_size: int, mixed_fraction: float, small_share: float = 0.0
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Draw training batch ``step``: float images in 0..1 and their targets."""
    images: list[torch.Tensor] = []
    targets: list[dict[str, torch.Tensor]] = []
    for j in range(batch_size):
        rng = np.random.default_rng([seed, step, j])
        image, boxes, labels = make_sample(
            rng, sample_size(rng, mixed_fraction), small_share=small_share
        )
        array = np.array(image, dtype=np.uint8)  # a writable copy for torch
        images.append(torch.from_numpy(array).permute(2, 0, 1).float().div_(255))
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    return images, targets


class _Batches(torch.utils.data.Dataset[Any]):
    """Batch ``k`` of the stream; a worker process draws the next while the model trains."""

    def __init__(self, seed: int, batch_size: int, mixed_fraction: float,
                 small_share: float) -> None:
        self.seed, self.batch_size, self.mixed_fraction = seed, batch_size, mixed_fraction
        self.small_share = small_share

    def __getitem__(self, step: int) -> Any:
        return make_batch(self.seed, step, self.batch_size, self.mixed_fraction,
                          self.small_share)

    def __len__(self) -> int:  # pragma: no cover - indexed through a sampler only
        raise TypeError("unbounded stream")


def _batches(args: argparse.Namespace, start: int) -> Iterator[Any]:
    data = _Batches(args.seed, args.batch_size, args.mixed_sizes, args.small_objects)
    if args.workers == 0:
        return (data[k] for k in range(start, args.steps))
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        sampler=range(start, args.steps),
        num_workers=args.workers,
        prefetch_factor=2,
        persistent_workers=False,
    )
    return iter(loader)


def save_model_dir(model: nn.Module, out: Path, model_kwargs: dict[str, Any], half: bool,
                   anchors: dict[str, Any] | None = None) -> Path:
    """Writes the trained detector into ``out`` in the served layout (fp16 when ``half``)."""
    return save_model_folder(out, model.state_dict(), ARCHITECTURE,
                             ("__background__", *CLASSES), half=half, model_kwargs=model_kwargs,
                             anchors=anchors)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _one_cycle(
    optimiser: torch.optim.Optimizer, args: argparse.Namespace, total: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=args.lr,
        total_steps=max(total, 1),
        pct_start=args.warmup,
        div_factor=20.0,
        final_div_factor=200.0,
    )


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run training as ``args`` say; returns a summary (steps, loss, wall time)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    anchors = anchors_for(args.anchor_min_ratio)
    model = build_model(anchors=anchors)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    schedule = _one_cycle(optimiser, args, args.steps)
    start, elapsed = 0, 0.0
    ckpt_path = out / CHECKPOINT
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("anchors") != anchors:
            raise SystemExit(f"{ckpt_path} was trained with anchors {state.get('anchors')}; "
                             f"resume with the same --anchor-min-ratio (got {anchors})")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if state["steps"] == args.steps:
            schedule.load_state_dict(state["schedule"])
        else:
            # A longer run: continue from the reached weights with a fresh, short cycle.
            schedule = _one_cycle(optimiser, args, args.steps - int(state["step"]))
        start, elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        log.info("resumed from %s at step %d", ckpt_path, start)

    began = time.monotonic()
    smooth: float | None = None
    bar = tqdm(
        total=args.steps,
        initial=start,
        desc="train",
        unit="step",
        # A log file (nohup) only needs an occasional line, not one per step.
        mininterval=5.0 if sys.stderr.isatty() else 30.0,
        disable=args.no_progress,
    )
    step = start
    for images, targets in _batches(args, start):
        losses = model(images, targets)
        loss = sum(losses.values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimiser.step()
        schedule.step()
        step += 1
        value = float(loss.detach())
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        bar.set_postfix(
            loss=f"{smooth:.3f}",
            cls=f"{float(losses['classification'].detach()):.3f}",
            box=f"{float(losses['bbox_regression'].detach()):.3f}",
            lr=f"{schedule.get_last_lr()[0]:.2e}",
            refresh=False,
        )
        bar.update(1)
        if step % args.checkpoint_every == 0 or step == args.steps:
            wall = elapsed + time.monotonic() - began
            _save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": step,
                    "steps": args.steps,
                    "elapsed": wall,
                    "anchors": anchors,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
            )
            save_model_dir(model, out, MODEL_KWARGS, half=not args.fp32, anchors=anchors)
            log.info("step %d/%d loss %.4f wall %.0fs", step, args.steps, smooth, wall)
    bar.close()
    wall = elapsed + time.monotonic() - began
    summary = {
        "steps": step,
        "batch_size": args.batch_size,
        "loss": smooth,
        "wall_seconds": round(wall, 1),
        "out": str(out),
    }
    (out / "train-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("done: %s", summary)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the training command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--steps", type=int, default=1200, help="optimiser steps in all")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (OneCycle)")
    p.add_argument("--wd", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup", type=float, default=0.15, help="share of steps warming up")
    p.add_argument("--clip", type=float, default=10.0, help="gradient norm clip")
    p.add_argument(
        "--mixed-sizes",
        type=float,
        default=0.3,
        help="share of pictures with random sides in 256..480 px",
    )
    p.add_argument(
        "--small-objects",
        type=float,
        default=0.3,
        metavar="SHARE",
        help="chance that a shape is drawn 28..48 px instead of 28..120 px (0: never)",
    )
    p.add_argument(
        "--anchor-min-ratio",
        type=float,
        default=0.1,
        metavar="RATIO",
        help="smallest default box as a share of the 320 px input (0: the builder's, 0.2)",
    )
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data processes drawing batches ahead (0: draw inline)",
    )
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default fp16)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.checkpoint_every < 1:
        p.error("--steps, --batch-size and --checkpoint-every must be >= 1")
    if not 0.0 <= args.small_objects <= 1.0:
        p.error("--small-objects must be between 0 and 1")
    if not 0.0 <= args.anchor_min_ratio < MAX_RATIO:
        p.error(f"--anchor-min-ratio must be 0 (the builder's) or below {MAX_RATIO}")
    if args.anchor_min_ratio == 0.0:
        args.anchor_min_ratio = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
