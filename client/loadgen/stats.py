"""The load generator's numbers: one cell's result, its statistics, the table, the hop.

Pure functions over what ``client.loadgen`` measured; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CELL_COLUMNS", "SERVER_METRICS", "THROUGH_WEB", "CellResult", "format_table",
           "hop_summary", "metric_totals", "percentile", "summarize"]

# Server counters read from /metrics before and after a cell (the detector's own
# histograms, and the process CPU time prometheus_client exports on Linux).
SERVER_METRICS = ("detector_batch_size_sum", "detector_batch_size_count",
                  "detector_inference_seconds_sum", "detector_inference_seconds_count",
                  "detector_queue_wait_seconds_sum",
                  "detector_queue_wait_seconds_count", "process_cpu_seconds_total")


@dataclass
class CellResult:
    """The measured outcome of one (protocol, clients) cell."""

    protocol: str
    clients: int
    requests: int
    images: int
    errors: int
    seconds: float
    req_per_s: float
    img_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    detections_per_image: float | None
    mean_batch_size: float | None
    model_busy: float | None = None
    queue_wait_ms: float | None = None
    server_cpu: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    model_ms: float | None = None
    hop_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


# ---- statistics and output ---------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolating linearly between ranks; NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(protocol: str, clients: int, latencies_s: Sequence[float], seconds: float, *,
              images_per_request: int = 1, errors: Mapping[str, int] | None = None,
              detections: int | None = None, server: Mapping[str, float] | None = None,
              inner_s: Sequence[float | None] | None = None) -> CellResult:
    """Builds a cell's result from its successful requests' latencies and its window.

    Args:
        inner_s: For each latency, the time the answer says its own call to the inference
            service took (the web backend's ``timing.inference_ms``), or None; gives
            ``hop_ms``, the p50 of the rest: the extra hop, request by request, so a model
            that runs slower or faster during the window does not blur it.
        server: How much each of :data:`SERVER_METRICS` grew during the window; gives
            the mean batch size, the share of the window the model was running
            (``model_busy``), the mean time of one model call (``model_ms``; the server
            exposes it as a histogram, so only its mean is exact), the mean queue wait
            and the CPU cores the server used.
    """
    ok = len(latencies_s)
    ms = [v * 1000.0 for v in latencies_s]
    hops = [(total - inner) * 1000.0
            for total, inner in zip(latencies_s, inner_s or [None] * ok, strict=True)
            if inner is not None]
    images = ok * images_per_request
    rate = ok / seconds if seconds > 0 else math.nan
    d = server or {}

    def per(num: str, den: str | None, scale: float = 1.0) -> float | None:
        if num not in d or (den is not None and not d.get(den)):
            return None
        return d[num] / (d[den] if den else seconds) * scale if seconds > 0 else None

    return CellResult(
        protocol=protocol, clients=clients, requests=ok, images=images,
        errors=sum((errors or {}).values()), seconds=seconds,
        req_per_s=rate, img_per_s=rate * images_per_request,
        p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / ok if ok else math.nan,
        detections_per_image=detections / images if detections is not None and images else None,
        mean_batch_size=per("detector_batch_size_sum", "detector_batch_size_count"),
        model_busy=per("detector_inference_seconds_sum", None),
        queue_wait_ms=per("detector_queue_wait_seconds_sum",
                          "detector_queue_wait_seconds_count", 1000.0),
        server_cpu=per("process_cpu_seconds_total", None),
        error_kinds=dict(errors or {}),
        model_ms=per("detector_inference_seconds_sum", "detector_inference_seconds_count",
                     1000.0),
        hop_ms=percentile(hops, 50) if hops else None,
    )


Column = tuple[str, str, str]  # (key, header, format spec)

CELL_COLUMNS: tuple[Column, ...] = (
    ("protocol", "protocol", ""), ("clients", "clients", "d"), ("req_per_s", "req/s", ".1f"),
    ("img_per_s", "img/s", ".1f"), ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"),
    ("p99_ms", "p99 ms", ".1f"), ("model_ms", "model ms", ".1f"), ("hop_ms", "hop ms", ".1f"),
    ("mean_batch_size", "batch", ".2f"),
    ("model_busy", "busy", ".0%"), ("server_cpu", "cpu", ".2f"),
    ("detections_per_image", "det/img", ".2f"), ("errors", "errors", "d"),
)


def format_table(rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[Column] = CELL_COLUMNS) -> str:
    """A plain-text table; missing or None values show as ``-``, text left, numbers right."""

    def cell(row: Mapping[str, Any], key: str, spec: str) -> str:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, spec)
        return str(value)

    body = [[cell(row, key, spec) for key, _, spec in columns] for row in rows]
    heads = [head for _, head, _ in columns]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(heads)]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, body)])


def metric_totals(metrics_text: str, names: Sequence[str] = SERVER_METRICS
                  ) -> dict[str, float]:
    """The values of the named unlabelled samples in a Prometheus text page (labelled
    samples of one name are summed); names absent from the page are left out."""
    found: dict[str, float] = {}
    for line in metrics_text.splitlines():
        name, _, rest = line.partition(" ")
        name = name.split("{", 1)[0]
        if name in names:
            try:
                found[name] = found.get(name, 0.0) + float(rest.split()[0])
            except (IndexError, ValueError):
                continue
    return found


#: What reaches the inference service through the web backend, and how the summary
#: names it.
THROUGH_WEB = {"web": "POST /api/detect", "deepstack": "DeepStack route"}


def hop_summary(results: Sequence[CellResult]) -> list[str]:
    """One line per client count and route measured both directly (``v2bin``) and through
    the web backend (``web``, ``deepstack``): the p50 and p95 either way, and the hop
    itself (each round trip less the backend's own call, p50) as a share of a direct call."""
    lines = []
    for clients in sorted({r.clients for r in results}):
        cells = {r.protocol: r for r in results if r.clients == clients}
        direct = cells.get("v2bin")
        if direct is None or math.isnan(direct.p50_ms):
            continue
        for protocol, name in THROUGH_WEB.items():
            web = cells.get(protocol)
            if web is None or math.isnan(web.p50_ms):
                continue
            model = next((c.model_ms for c in (direct, web) if c.model_ms is not None), None)
            inside = f"; model call {model:.1f} ms (mean)" if model is not None else ""
            hop = ""
            if web.hop_ms is not None:
                hop = (f"; the hop itself {web.hop_ms:.1f} ms p50, "
                       f"{web.hop_ms / direct.p50_ms:.0%} of a direct call")
            lines.append(f"extra hop at {clients} client(s), {name}: direct V2 p50 "
                         f"{direct.p50_ms:.1f} / p95 {direct.p95_ms:.1f} ms, through the "
                         f"backend p50 {web.p50_ms:.1f} / p95 {web.p95_ms:.1f} ms{hop}{inside}")
    return lines
