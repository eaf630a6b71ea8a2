"""``python -m predictor.export``: a model folder compiled ahead of time for the torch-free runtime.

Reads a model folder as the server does (config.json, weights, labels), exports the
dense part (backbone and head) with ``torch.export`` and converts it with OpenVINO,
then writes a compiled folder (:mod:`predictor.pipeline.compiled`):

    model.xml, model.bin   the graph (OpenVINO IR, fp32 weights)
    anchors.npy            the anchors for the fixed input size
    labels.txt             class names, the background first
    compiled.json          input size and normalisation, box coding, score/NMS/top-k
                           parameters, labels, model version, precision, and the torch /
                           torchvision / OpenVINO versions that made it

The precision is chosen here, where torch can check it: the auto choice (bf16 where the
CPU has it natively) is kept only when its detections agree with eager fp32 on the check
pictures, as the server's load-time check does. The folder is checked against the torch
path before it is written. Only the SSD family (SSD300, SSDlite320) exports for now; any
other architecture gets one line saying to serve it with the torch image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEMO_MODEL_DIR, ModelConfig
from .pipeline.compiled import FORMAT, MANIFEST, CompiledModel

SUPPORTED = ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large")
# Largest difference from the torch path the export accepts (the bar).
MAX_BOX_PX = 1.0
MAX_SCORE = 0.01
# Detections compared by the export's own check: confident ones. Lower down, untrained
# models give near-equal scores whose NMS order a last-bit difference decides.
CHECKED_SCORE = 0.3


class ExportError(RuntimeError):
    """The model cannot be compiled; the message says what to do instead."""


def _step(text: str) -> None:
    print(f"[export] {text}", file=sys.stderr, flush=True)


def _dense(model: Any) -> Any:
    import torch

    class Dense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = model.backbone, model.head

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = list(self.backbone(x).values())
            out = self.head(features)
            return out["bbox_regression"], out["cls_logits"]

    return Dense().eval()


def _anchors(model: Any, size: tuple[int, int]) -> np.ndarray:
    """The anchors torchvision makes for one picture of the fixed size."""
    import torch

    seen: list[Any] = []
    handle = model.anchor_generator.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.inference_mode():
            model([torch.rand(3, *size)])
    finally:
        handle.remove()
    return np.asarray(seen[0][0].numpy(), dtype=np.float32)


def _compare(torch_dets: Sequence[Any], compiled_dets: Sequence[Any]) -> str | None:
    """None when the compiled path answers like the torch path, else what differs."""
    for i, (a, b) in enumerate(zip(torch_dets, compiled_dets, strict=True)):
        keep_a = a.scores >= CHECKED_SCORE + MAX_SCORE
        keep_b = b.scores >= CHECKED_SCORE - MAX_SCORE
        if keep_a.sum() > keep_b.sum():
            return f"picture {i}: {keep_a.sum()} detections against {keep_b.sum()}"
        for box, score, label in zip(a.boxes[keep_a], a.scores[keep_a], a.labels[keep_a],
                                     strict=True):
            near = (b.labels[keep_b] == label) & (np.abs(b.scores[keep_b] - score) <= MAX_SCORE)
            if not near.any() or np.abs(b.boxes[keep_b][near] - box).max(axis=1).min() > MAX_BOX_PX:
                return f"picture {i}: detection {label} at {score:.3f} {box.round(1)} missing"
    return None


def export(model_dir: Path, out: Path, precision: str = "auto",
           check_dir: Path | None = None) -> dict[str, Any]:
    """Writes the compiled folder for ``model_dir`` at ``out``; returns its manifest."""
    import openvino as ov
    import torch
    import torchvision

    from .pipeline import precision as prec
    from .pipeline.engine import Engine

    started = time.monotonic()
    _step(f"loading {model_dir}")
    engine = Engine(ModelConfig(model_dir=str(model_dir), device="cpu", cpu_accel=False))
    loaded = engine.load()
    model: Any = loaded.module
    if loaded.scripted or loaded.architecture not in SUPPORTED:
        raise ExportError(
            f"{loaded.architecture}: the compiled runtime serves {', '.join(SUPPORTED)} for now; "
            "serve this model with the torch image (make image VARIANT=gpu, or the CPU image "
            "with a model folder: it runs the CPU engine at load)")
    size = (int(model.transform.fixed_size[0]), int(model.transform.fixed_size[1]))
    _step(f"{loaded.architecture}: exporting backbone+head at {size[0]}x{size[1]} "
          "(torch.export -> OpenVINO)")
    dense = _dense(model)
    example = torch.rand(1, 3, *size)
    with torch.no_grad():
        program = torch.export.export(dense, (example,))
    graph = ov.convert_model(program, input=[[1, 3, *size]])
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent if out.parent.exists()
                                 else None))
    try:
        ov.save_model(graph, str(work / "model.xml"), compress_to_fp16=False)
        np.save(work / "anchors.npy", _anchors(model, size))
        (work / "labels.txt").write_text("\n".join(loaded.labels) + "\n")
        transform: Any = model.transform
        coder: Any = model.box_coder
        manifest: dict[str, Any] = {
            "format": FORMAT, "architecture": loaded.architecture, "family": "ssd",
            "labels": loaded.labels, "version": loaded.version, "route": "torch.export",
            "input": {"size": list(size), "mean": list(transform.image_mean),
                      "std": list(transform.image_std)},
            "postprocess": {"score_thresh": model.score_thresh, "nms_thresh": model.nms_thresh,
                            "topk_candidates": model.topk_candidates,
                            "detections_per_img": model.detections_per_img,
                            "box_weights": list(coder.weights)},
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                         "openvino": ov.get_version()},
            "precision": "fp32",
        }
        pictures = prec.pictures(check_dir or DEMO_MODEL_DIR, 8) or [
            np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)]
        reference = engine.run(pictures)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        problem = _compare(reference, CompiledModel(work).run(pictures))
        if problem:
            raise ExportError(f"the compiled model answers differently from torch: {problem}; "
                              "serve it with the torch image")
        _step(f"fp32 answers as torch on {len(pictures)} picture(s)")
        wanted, why = prec.resolve(precision, prec.native_precisions())
        manifest["why_precision"] = why
        if wanted is not prec.Precision.FP32:
            manifest["precision"] = wanted.value
            (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            got = CompiledModel(work).run(pictures)
            ok, words = prec.agreement(wanted, [(d.boxes, d.scores, d.labels) for d in reference],
                                       [(d.boxes, d.scores, d.labels) for d in got])
            _step(f"{wanted.value} check on {len(pictures)} picture(s): {words}")
            if not ok:
                manifest["precision"] = "fp32"
                manifest["why_precision"] = f"{wanted.value} refused: {words}"
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        work.chmod(0o755)  # the image's server runs as another user
        if out.exists():
            shutil.rmtree(out)
        work.replace(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _step(f"wrote {out} ({manifest['precision']}) in {time.monotonic() - started:.1f} s")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--model_dir IN --out OUT [--cpu_precision P] [--calibration_dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m predictor.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=DEMO_MODEL_DIR,
                        help="the model folder to compile (default: the demo detector)")
    parser.add_argument("--out", type=Path, required=True, help="the compiled folder to write")
    parser.add_argument("--cpu_precision", default="auto",
                        choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--calibration_dir", type=Path,
                        help="your own pictures for the precision check (default: the demo's)")
    args = parser.parse_args(argv)
    from .pipeline.engines import LoadError

    try:
        export(args.model_dir, args.out, args.cpu_precision, args.calibration_dir)
    except (ExportError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
