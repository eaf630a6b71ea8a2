"""The CPU engine's precision: which ones this CPU runs natively, and the check at load.

``--cpu_precision auto`` picks bf16 where the CPU has native bf16 arithmetic (OpenVINO
lists ``BF16`` among the CPU's optimisation capabilities: AVX512_BF16 or AMX), else fp16
where it has native fp16 (``FP16``: AMX-FP16, ARM), else fp32. A reduced precision is
kept only when the detections it gives agree with eager fp32 on the check pictures
(:func:`agreement`); otherwise the engine falls back to fp32 and says why. int8 is opt-in
(post-training quantization with NNCF, calibrated on the user's own pictures) and is
refused, with a log line, when its check fails.
The measurements behind these choices are in docs/speed.md.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Pictures read from --calibration_dir: the file types PIL reads that cameras write.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Calibration pictures NNCF sees at most (its statistics settle well before).
MAX_CALIBRATION = 300
# A detection of the eager model at or above this score is a "truth" for the check.
TRUTH_SCORE = 0.3
# COCO's small objects: under 32 x 32 pixels.
SMALL_AREA = 32 * 32


class Precision(enum.Enum):
    """A precision the engine can run in."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"


@dataclass(frozen=True)
class Gate:
    """What a precision must keep of eager's detections on the check pictures."""

    min_map50: float  # mAP@0.5 of the engine against eager's detections
    max_small_recall_drop: float  # 1 - recall of eager's small objects
    tolerance: float  # raw outputs, relative to their scale (catches a broken graph)


GATES = {
    Precision.FP32: Gate(1.0, 0.0, 1e-3),
    Precision.BF16: Gate(0.995, 1.0, 0.05),
    Precision.FP16: Gate(0.995, 1.0, 0.05),
    Precision.INT8: Gate(0.99, 0.02, 1.0),
}


def native_precisions() -> list[Precision]:
    """Precisions this CPU computes natively, fastest first (fp32 always)."""
    import openvino as ov

    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    found = [p for p, cap in ((Precision.BF16, "BF16"), (Precision.FP16, "FP16")) if cap in caps]
    return [*found, Precision.FP32]


def resolve(requested: str, native: Sequence[Precision]) -> tuple[Precision, str]:
    """The precision to try first for ``--cpu_precision`` and a phrase saying why."""
    if requested == "auto":
        best = native[0]
        if best is Precision.FP32:
            return best, "auto: this CPU has no native bf16 or fp16"
        return best, f"auto: this CPU computes {best.value} natively"
    wanted = Precision(requested)
    if wanted in (Precision.BF16, Precision.FP16) and wanted not in native:
        # OpenVINO would emulate it, slower than fp32: refuse rather than slow down.
        return Precision.FP32, f"{wanted.value} asked for, but this CPU has no native " \
                               f"{wanted.value}: fp32"
    return wanted, f"{wanted.value} asked for"


def ov_config(precision: Precision, threads: int, workers: int) -> dict[str, Any]:
    """OpenVINO CPU settings: ``workers`` streams of ``threads`` threads each."""
    hint = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16",
            Precision.INT8: "f32"}[precision]
    return {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": max(1, workers),
            "INFERENCE_NUM_THREADS": max(1, workers) * max(1, threads)}


def pictures(folder: str | Path | None, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` RGB pictures from ``folder`` (sorted by name), EXIF applied."""
    from PIL import Image, ImageOps

    if not folder:
        return []
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
    out = []
    for path in paths[:limit]:
        with Image.open(path) as img:
            out.append(np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``N x 4`` and ``M x 4`` xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return np.asarray(inter / union, dtype=np.float64)


Dets = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes N x 4, scores N, labels N


def _average_precision(truth: Sequence[Dets], found: Sequence[Dets], label: int) -> float:
    """All-point interpolated AP@0.5 of one class (VOC 2010+ style)."""
    scored: list[tuple[float, bool]] = []
    total = 0
    for (t_boxes, _, t_labels), (boxes, scores, labels) in zip(truth, found, strict=True):
        gt = t_boxes[t_labels == label]
        total += len(gt)
        mine = labels == label
        order = np.argsort(-scores[mine], kind="stable")
        cand, cand_scores = boxes[mine][order], scores[mine][order]
        taken = np.zeros(len(gt), dtype=bool)
        ious = _iou(cand, gt) if len(gt) and len(cand) else np.zeros((len(cand), len(gt)))
        for i in range(len(cand)):
            j = int(np.argmax(ious[i])) if len(gt) else -1
            hit = j >= 0 and ious[i, j] >= 0.5 and not taken[j]
            if hit:
                taken[j] = True
            scored.append((float(cand_scores[i]), hit))
    if total == 0:
        return float("nan")
    scored.sort(key=lambda s: -s[0])
    hits = np.cumsum([h for _, h in scored]) if scored else np.zeros(0)
    recall = hits / total
    precision = hits / np.arange(1, len(scored) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(scored) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def mean_ap50(truth: Sequence[Dets], found: Sequence[Dets]) -> float:
    """mAP@0.5 over the classes present in ``truth``; NaN when it has none."""
    labels = sorted({int(v) for _, _, t in truth for v in t})
    aps = [_average_precision(truth, found, label) for label in labels]
    return float(np.mean(aps)) if aps else float("nan")


def small_recall(truth: Sequence[Dets], found: Sequence[Dets]) -> float:
    """Share of the small ``truth`` boxes that ``found`` has (same label, IoU >= 0.5)."""
    small = hit = 0
    for (t_boxes, _, t_labels), (boxes, _, labels) in zip(truth, found, strict=True):
        for box, label in zip(t_boxes, t_labels, strict=True):
            if np.prod(box[2:] - box[:2]) >= SMALL_AREA:
                continue
            small += 1
            same = boxes[labels == label]
            hit += bool(len(same)) and bool((_iou(box[None], same) >= 0.5).any())
    return hit / small if small else float("nan")


def as_truth(dets: Sequence[Dets]) -> list[Dets]:
    """Eager's confident detections, used as the truth the engine must keep."""
    return [(b[s >= TRUTH_SCORE], s[s >= TRUTH_SCORE], lab[s >= TRUTH_SCORE])
            for b, s, lab in dets]


def agreement(precision: Precision, eager: Sequence[Dets], engine: Sequence[Dets]
              ) -> tuple[bool, str]:
    """Whether ``engine``'s detections keep eager's well enough for ``precision``."""
    gate = GATES[precision]
    truth = as_truth(eager)
    found = mean_ap50(truth, engine)
    recall = small_recall(truth, engine)
    if np.isnan(found):
        return True, "no confident detection on the check pictures to compare"
    words = f"mAP@0.5 against eager {found:.4f} (at least {gate.min_map50})"
    if found < gate.min_map50:
        return False, words
    if not np.isnan(recall) and 1.0 - recall > gate.max_small_recall_drop:
        return False, f"small-object recall {recall:.3f} against eager"
    return True, words


def quantize(model: Any, inputs: Sequence[np.ndarray]) -> Any:
    """int8 post-training quantization of an ``ov.Model`` with NNCF on ``inputs``.

    Raises ImportError when NNCF is not installed.
    """
    import nncf

    data = nncf.Dataset(list(inputs))
    return nncf.quantize(model, data, subset_size=len(inputs),
                         preset=nncf.QuantizationPreset.PERFORMANCE)
