"""The benchmark's table, ratios, goals and request profile, from the systems' measurements.

The raw loop runs twice, at torch's default intra-op threads and at one thread; every
ratio against "raw" divides by the better of the two at that batch size, so no
setting of the baseline flatters the server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from client.loadgen import CellResult, format_table

# The goals (CPU, 8 clients, V2 binary, default flags): vs the better raw loop at batch 8,
# vs the plain predictor at 8 clients, and latency at 1 client vs one raw batch-1 call.
GOAL_CLIENTS = 8
GOAL_PROTOCOL = "v2bin"
GOAL_VS_RAW = 1.3
MOONSHOT_VS_RAW = 1.6
GOAL_VS_PLAIN = 2.0

COLUMNS = (
    ("system", "system", ""), ("protocol", "protocol", ""), ("clients", "clients", "d"),
    ("batch", "max batch", "d"), ("threads", "threads", ""), ("req_per_s", "req/s", ".1f"),
    ("img_per_s", "img/s", ".1f"), ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"),
    ("p99_ms", "p99 ms", ".1f"), ("mean_batch_size", "mean batch", ".2f"),
    ("model_busy", "busy", ".0%"), ("server_cpu", "cpu", ".2f"),
    ("detections_per_image", "det/img", ".2f"), ("errors", "errors", "d"),
    ("x_raw", "x raw", ".2f"), ("x_plain", "x plain", ".2f"),
)

# Stages of one request, from the server's /metrics (KServe's request_* histograms and the
# detector's queue wait) and the client's latency; see :func:`stage_profile`.
STAGES = ("decode", "queue", "model", "postprocess", "transport")
PROFILE_METRICS = (
    "request_preprocess_seconds_sum", "request_preprocess_seconds_count",
    "request_predict_seconds_sum", "request_predict_seconds_count",
    "request_postprocess_seconds_sum", "request_postprocess_seconds_count",
    "detector_queue_wait_seconds_sum", "detector_queue_wait_seconds_count",
    "detector_inference_seconds_sum", "detector_images_total",
)


@dataclass
class RawResult:
    """Throughput of the model alone at one batch size and thread count."""

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
    threads: int | None = None  # torch intra-op threads
    default_threads: bool = True  # whether ``threads`` is torch's own choice

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @property
    def label(self) -> str:
        """``2 (default)`` or ``1``."""
        return f"{self.threads}{' (default)' if self.default_threads else ''}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def best_raw(raw: Sequence[RawResult], batch: int) -> RawResult | None:
    """The raw run with the most images/s at ``batch`` (any thread count)."""
    runs = [r for r in raw if r.batch == batch]
    return max(runs, key=lambda r: r.img_per_s) if runs else None


def build_rows(raw: Sequence[RawResult], plain: Sequence[CellResult],
               ours: Sequence[tuple[int, CellResult]],
               ours_threads: str | None = None) -> list[dict[str, Any]]:
    """One row per measurement; ``ours`` pairs each cell with the server's max batch size.

    ``x raw`` divides by the better raw loop at the row's max batch size; ``x plain``
    by the plain predictor at the same number of clients.
    """
    plain_by_clients = {c.clients: c.img_per_s for c in plain}
    rows: list[dict[str, Any]] = []
    for r in raw:
        best = best_raw(raw, r.batch)
        rows.append({"system": "raw", "protocol": "-", "batch": r.batch, "threads": r.label,
                     "img_per_s": r.img_per_s, "p50_ms": r.p50_ms, "p95_ms": r.p95_ms,
                     "p99_ms": r.p99_ms, "mean_batch_size": float(r.batch),
                     "model_busy": 1.0, "server_cpu": r.cpu,
                     "detections_per_image": r.detections_per_image, "errors": 0,
                     "x_raw": _ratio(r.img_per_s, best.img_per_s if best else None)})
    for c in plain:
        best = best_raw(raw, 1)
        rows.append({**c.to_dict(), "system": "plain", "batch": 1, "threads": "default",
                     "x_raw": _ratio(c.img_per_s, best.img_per_s if best else None),
                     "x_plain": 1.0})
    for batch, c in ours:
        best = best_raw(raw, batch)
        rows.append({**c.to_dict(), "system": "ours", "batch": batch,
                     "threads": ours_threads or "auto",
                     "x_raw": _ratio(c.img_per_s, best.img_per_s if best else None),
                     "x_plain": _ratio(c.img_per_s, plain_by_clients.get(c.clients))})
    return rows


def goals(rows: Sequence[Mapping[str, Any]], raw: Sequence[RawResult]) -> list[dict[str, Any]]:
    """The goals, checked on the ours / v2bin rows at 8 clients and at 1 client."""
    out: list[dict[str, Any]] = []
    cell = next((r for r in rows if r["system"] == "ours" and r["protocol"] == GOAL_PROTOCOL
                 and r.get("clients") == GOAL_CLIENTS), None)
    if cell is not None:
        best = best_raw(raw, int(cell["batch"]))
        what = (f"the better raw loop at batch {cell['batch']}"
                + (f" ({best.label} threads)" if best else ""))
        for key, target, against in (
                ("x_raw", GOAL_VS_RAW, what),
                ("x_raw", MOONSHOT_VS_RAW, what + ", moonshot"),
                ("x_plain", GOAL_VS_PLAIN, f"the plain predictor at {GOAL_CLIENTS} clients")):
            value = cell.get(key)
            out.append({"goal": f"img/s, {GOAL_PROTOCOL} at {GOAL_CLIENTS} clients vs {against}",
                        "ratio": value, "target": target, "higher_is_better": True,
                        "met": value is not None and value >= target})
    single = next((r for r in rows if r["system"] == "ours" and r["protocol"] == GOAL_PROTOCOL
                   and r.get("clients") == 1), None)
    fastest = min((r for r in raw if r.batch == 1), key=lambda r: r.p50_ms, default=None)
    if single is not None and fastest is not None and single.get("p50_ms") is not None:
        ratio = single["p50_ms"] / fastest.p50_ms
        out.append({"goal": f"p50 latency, {GOAL_PROTOCOL} at 1 client vs one raw batch-1 call "
                            f"({fastest.label} threads, {fastest.p50_ms:.1f} ms)",
                    "ratio": ratio, "target": 1.0, "higher_is_better": False,
                    "met": ratio <= 1.0})
    return out


def stage_profile(before: Mapping[str, float], after: Mapping[str, float],
                  client_mean_ms: float | None) -> dict[str, float] | None:
    """Mean milliseconds per request in each of :data:`STAGES`, from two /metrics scrapes.

    decode: parsing and decoding (KServe's preprocess); queue: waiting for a batch;
    model: the batch running (predict minus queue); postprocess: thresholds and the
    answer's tensors; transport: the rest of the client's latency (HTTP or gRPC, the
    framework, serialising the answer, the client itself).
    """
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in PROFILE_METRICS}

    def mean_ms(name: str) -> float | None:
        count = d[f"{name}_count"]
        return d[f"{name}_sum"] / count * 1000.0 if count > 0 else None

    pre, predict, post = (mean_ms(f"request_{s}_seconds")
                          for s in ("preprocess", "predict", "postprocess"))
    queue = mean_ms("detector_queue_wait_seconds")
    if pre is None or predict is None or post is None or queue is None:
        return None
    profile = {"decode": pre, "queue": queue, "model": max(0.0, predict - queue),
               "postprocess": post}
    if client_mean_ms is not None and not math.isnan(client_mean_ms):
        profile["transport"] = max(0.0, client_mean_ms - sum(profile.values()))
    if d["detector_images_total"] > 0:
        # Model time per image, whatever the batch: what one image costs a worker.
        profile["model_per_image"] = (d["detector_inference_seconds_sum"]
                                      / d["detector_images_total"] * 1000.0)
    return profile


def format_profile(profiles: Sequence[Mapping[str, Any]]) -> str:
    """A table: one line per profiled cell, mean ms per request in each stage."""
    header = ["protocol", "clients", *STAGES, "total", "model/img"]
    lines = ["  ".join(f"{h:>11}" for h in header)]
    for p in profiles:
        stages = p["stages"]
        total = sum(stages.get(s, 0.0) for s in STAGES)
        values = [f"{p['protocol']:>11}", f"{p['clients']:>11}",
                  *(f"{stages[s]:>11.1f}" if s in stages else f"{'-':>11}" for s in STAGES),
                  f"{total:>11.1f}", f"{stages.get('model_per_image', math.nan):>11.1f}"]
        lines.append("  ".join(values))
    return "\n".join(lines)


def format_report(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                  checked: Sequence[Mapping[str, Any]],
                  profiles: Sequence[Mapping[str, Any]] = ()) -> str:
    """The text printed at the end of a run."""
    lines = [
        f"model: {meta['architecture']}  weights: {meta['weights']}  device: {meta['device']}"
        f"{' fp16' if meta.get('fp16') else ''}  CPUs: {meta.get('cpus')}  "
        f"torch default threads: {meta['torch_threads']}  load: {meta.get('load', '-')}",
        f"images: {meta['images']} x {meta['image_size']} JPEG ({meta['image_source']}); "
        f"detections/image at score >= {meta['score_threshold']}: "
        f"{_fmt(meta.get('detections_per_image'))} (the model's own output, before that "
        f"cut: {_fmt(meta.get('model_detections_per_image'))})",
        "raw: the eager model on preloaded tensors (latency = one batch call), at torch's "
        "default threads and at 1; plain: KServe custom predictor, sync predict, V1 JSON; "
        "ours: python -m predictor " + (" ".join(meta.get("server_args") or []) or
                                        "(default flags)"),
        "x raw: against the better raw run at the same batch size; busy: share of the "
        "window the model ran; cpu: cores the server process (raw: the loop) used",
        "",
        format_table(rows, COLUMNS),
    ]
    if profiles:
        lines += ["", "where a request's time goes (ours, mean ms per request; model/img: "
                      "model time per image):", format_profile(profiles)]
    if checked:
        lines.append("")
        for g in checked:
            verdict = "met" if g["met"] else "NOT met"
            sign = ">=" if g.get("higher_is_better", True) else "<="
            lines.append(f"goal: {g['goal']}: {_fmt(g['ratio'])} (target {sign} "
                         f"{g['target']}) {verdict}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plan_line(log_dir: Path) -> str:
    """Our server's start-up line naming its workers and threads, and why."""
    for path in sorted(log_dir.glob("predictor-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "inference worker(s) x" in line:
                return line.split("INFO", 1)[-1].split("]", 1)[-1].strip()
    return ""


def threads_of(plan_line: str) -> str | None:
    """``2 workers x 1`` from the plan line, for the table's threads column."""
    words = plan_line.split()
    if len(words) >= 5 and words[1].startswith("inference"):
        return f"{words[0]}w x {words[4]}"
    return None
