"""Headline rounds: the comparison the goals rest on, measured again, interleaved.

On a shared machine the load changes from minute to minute, and a comparison of
figures taken minutes apart measures the load as much as the systems. After the main
pass the benchmark measures the headline quartet again, back to back, ``--rounds``
times: the raw loop at the headline batch size (torch's default threads and one
thread), the plain predictor and ours at the headline number of clients. The table
shows each system's median round; each goal's ratio is the median of the ratios
within a round, where all four saw the same load.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from client.loadgen import CellResult

from .report import RawResult


@dataclass
class Series:
    """Every measurement of the headline quartet, one entry per round."""

    raw: list[list[RawResult]] = field(default_factory=list)  # per round: one per thread count
    plain: list[CellResult] = field(default_factory=list)
    ours: list[CellResult] = field(default_factory=list)

    def add(self, raw: Sequence[RawResult], plain: CellResult | None,
            ours: CellResult | None) -> None:
        """Records one round (a system not measured is None)."""
        if raw:
            self.raw.append(list(raw))
        if plain is not None:
            self.plain.append(plain)
        if ours is not None:
            self.ours.append(ours)

    def ratios(self) -> dict[str, list[float]]:
        """Per round: ours / the better raw run, and ours / plain."""
        out: dict[str, list[float]] = {"x_raw": [], "x_plain": []}
        for k, cell in enumerate(self.ours):
            if k < len(self.raw) and self.raw[k]:
                best = max(r.img_per_s for r in self.raw[k])
                if best > 0:
                    out["x_raw"].append(cell.img_per_s / best)
            if k < len(self.plain) and self.plain[k].img_per_s > 0:
                out["x_plain"].append(cell.img_per_s / self.plain[k].img_per_s)
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-ready, one entry per round."""
        rounds = max(len(self.raw), len(self.plain), len(self.ours))
        ratios = self.ratios()
        out = []
        for k in range(rounds):
            entry: dict[str, Any] = {"round": k + 1}
            if k < len(self.raw):
                entry["raw_img_per_s"] = {r.label: r.img_per_s for r in self.raw[k]}
            if k < len(self.plain):
                entry["plain_img_per_s"] = self.plain[k].img_per_s
            if k < len(self.ours):
                entry["ours_img_per_s"] = self.ours[k].img_per_s
            for key, values in ratios.items():
                if k < len(values):
                    entry[key] = values[k]
            out.append(entry)
        return out


def median_item(items: Sequence[Any], key: Callable[[Any], float]) -> Any:
    """The item whose ``key`` is the median (the lower middle one for an even count)."""
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2]


def median_ratios(series: Series) -> dict[str, float]:
    """The median of each per-round ratio that was measured."""
    return {k: statistics.median(v) for k, v in series.ratios().items() if v}


def replace_by_median(raw: list[RawResult], plain: list[CellResult],
                      ours: list[tuple[int, CellResult]], series: Series,
                      batch: int, clients: int, protocol: str) -> None:
    """Puts each headline system's median round in the main pass's lists, in place."""
    if series.raw:
        for j, first in enumerate(series.raw[0]):
            runs = [r[j] for r in series.raw if j < len(r)]
            chosen = median_item(runs, key=lambda r: r.img_per_s)
            for i, r in enumerate(raw):
                if r.batch == batch and r.threads == first.threads:
                    raw[i] = chosen
    if series.plain:
        chosen_plain = median_item(series.plain, key=lambda c: c.img_per_s)
        for i, c in enumerate(plain):
            if c.clients == clients:
                plain[i] = chosen_plain
    if series.ours:
        chosen_ours = median_item(series.ours, key=lambda c: c.img_per_s)
        for i, (b, c) in enumerate(ours):
            if c.clients == clients and c.protocol == protocol:
                ours[i] = (b, chosen_ours)
