"""The benchmark's table, ratios and goals, from the three systems' measurements."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from client.bench import CellResult, format_table

# The closing note's goals (CPU, 8 clients, V2 binary): vs the raw loop at batch 8 and
# vs the plain predictor at 8 clients.
GOAL_CLIENTS = 8
GOAL_PROTOCOL = "v2bin"
GOAL_VS_RAW = 0.9
GOAL_VS_PLAIN = 1.4

COLUMNS = (
    ("system", "system", ""), ("protocol", "protocol", ""), ("clients", "clients", "d"),
    ("batch", "max batch", "d"), ("req_per_s", "req/s", ".1f"), ("img_per_s", "img/s", ".1f"),
    ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
    ("mean_batch_size", "mean batch", ".2f"), ("model_busy", "busy", ".0%"),
    ("server_cpu", "cpu", ".2f"), ("detections_per_image", "det/img", ".2f"),
    ("errors", "errors", "d"), ("x_raw", "x raw", ".2f"), ("x_plain", "x plain", ".2f"),
)


@dataclass
class RawResult:
    """Throughput of the model alone at one batch size."""

    batch: int
    iterations: int
    seconds: float
    img_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    detections_per_image: float
    model_detections_per_image: float
    cpu: float | None = None  # CPU cores the loop used (process time / wall time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def build_rows(raw: Sequence[RawResult], plain: Sequence[CellResult],
               ours: Sequence[tuple[int, CellResult]]) -> list[dict[str, Any]]:
    """One row per measurement; ``ours`` pairs each cell with the server's max batch size.

    ``x raw`` divides by the raw loop at the row's max batch size; ``x plain`` by the
    plain predictor at the same number of clients.
    """
    raw_by_batch = {r.batch: r.img_per_s for r in raw}
    plain_by_clients = {c.clients: c.img_per_s for c in plain}
    rows: list[dict[str, Any]] = []
    for r in raw:
        rows.append({"system": "raw", "protocol": "-", "batch": r.batch,
                     "img_per_s": r.img_per_s, "p50_ms": r.p50_ms, "p95_ms": r.p95_ms,
                     "p99_ms": r.p99_ms, "mean_batch_size": float(r.batch),
                     "model_busy": 1.0, "server_cpu": r.cpu,
                     "detections_per_image": r.detections_per_image, "errors": 0,
                     "x_raw": 1.0})
    for c in plain:
        rows.append({**c.to_dict(), "system": "plain", "batch": 1,
                     "x_raw": _ratio(c.img_per_s, raw_by_batch.get(1)), "x_plain": 1.0})
    for batch, c in ours:
        rows.append({**c.to_dict(), "system": "ours", "batch": batch,
                     "x_raw": _ratio(c.img_per_s, raw_by_batch.get(batch)),
                     "x_plain": _ratio(c.img_per_s, plain_by_clients.get(c.clients))})
    return rows


def goals(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The two goals, checked on the ours / v2bin / 8-client row when it was measured."""
    cell = next((r for r in rows if r["system"] == "ours" and r["protocol"] == GOAL_PROTOCOL
                 and r.get("clients") == GOAL_CLIENTS), None)
    if cell is None:
        return []
    out = []
    for key, target, what in (("x_raw", GOAL_VS_RAW, f"raw loop at batch {cell['batch']}"),
                              ("x_plain", GOAL_VS_PLAIN,
                               f"plain predictor at {GOAL_CLIENTS} clients")):
        value = cell.get(key)
        out.append({"goal": f"{GOAL_PROTOCOL} at {GOAL_CLIENTS} clients vs {what}",
                    "ratio": value, "target": target,
                    "met": value is not None and value >= target})
    return out


def format_report(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                  checked: Sequence[Mapping[str, Any]]) -> str:
    """The text printed at the end of a run."""
    lines = [
        f"model: {meta['architecture']}  weights: {meta['weights']}  device: {meta['device']}"
        f"{' fp16' if meta.get('fp16') else ''}  torch threads: {meta['torch_threads']}",
        f"images: {meta['images']} x {meta['image_size']} JPEG ({meta['image_source']}); "
        f"detections/image at score >= {meta['score_threshold']}: "
        f"{_fmt(meta.get('detections_per_image'))} (the model's own output, before that "
        f"cut: {_fmt(meta.get('model_detections_per_image'))})",
        "raw: the model on preloaded tensors (latency = one batch call); plain: KServe "
        "custom predictor, sync predict, V1 JSON; ours: python -m predictor",
        "busy: share of the window the model was running (from /metrics); cpu: CPU cores "
        "the server process (raw: the loop) used",
        "",
        format_table(rows, COLUMNS),
    ]
    if checked:
        lines.append("")
        for g in checked:
            verdict = "met" if g["met"] else "NOT met"
            lines.append(f"goal: {g['goal']}: {_fmt(g['ratio'])} (target >= {g['target']}) "
                         f"{verdict}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
