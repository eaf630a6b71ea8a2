"""The CLI's output formats: the terminal table, JSON and CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO, Any

from ._types import ImageResult

__all__ = ["CSV_COLUMNS", "TableWriter", "json_document", "write_csv", "write_json"]

CSV_COLUMNS = ("file", "label", "label_id", "score", "x1", "y1", "x2", "y2",
               "image_height", "image_width")


class TableWriter:
    """Prints one row per detection as results arrive, columns sized to the file names."""

    def __init__(self, out: IO[str], names: Sequence[str]) -> None:
        self._out = out
        self._file_width = max([len("FILE"), *(len(n) for n in names)])
        self._header_done = False

    def write(self, name: str, result: ImageResult) -> None:
        """Prints the rows of one image."""
        if not self._header_done:
            self._line("FILE", "LABEL", "SCORE", "X1", "Y1", "X2", "Y2")
            self._header_done = True
        if not result.detections:
            self._out.write(f"{name:<{self._file_width}}  (no detections)\n")
            return
        for det in result.detections:
            self._line(name, det.label, f"{det.score:.3f}",
                       *(f"{v:.1f}" for v in det.box))

    def _line(self, name: str, label: str, score: str, *box: str) -> None:
        coords = " ".join(f"{v:>7}" for v in box)
        self._out.write(f"{name:<{self._file_width}}  {label:<14} {score:>6} {coords}\n")


def json_document(model: str, protocol: str, names: Sequence[str],
                  results: Sequence[ImageResult]) -> dict[str, Any]:
    """The ``--json`` document: one entry per image, in input order."""
    return {
        "model": model,
        "protocol": protocol,
        "images": [{"file": name, **result.to_dict()}
                   for name, result in zip(names, results, strict=True)],
    }


def write_json(path: str, document: dict[str, Any], stdout: IO[str]) -> None:
    """Writes ``document`` to ``path``, or to ``stdout`` when ``path`` is ``-``."""
    text = json.dumps(document, indent=2) + "\n"
    if path == "-":
        stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_csv(path: str, names: Sequence[str], results: Sequence[ImageResult],
              stdout: IO[str]) -> None:
    """One row per detection (images without detections have no row)."""
    def rows(writer: Any) -> None:
        writer.writerow(CSV_COLUMNS)
        for name, result in zip(names, results, strict=True):
            height, width = result.image_size
            for det in result.detections:
                writer.writerow([name, det.label, det.label_id, f"{det.score:.5f}",
                                 *(f"{v:.2f}" for v in det.box), height, width])

    if path == "-":
        rows(csv.writer(stdout))
        return
    with open(path, "w", encoding="utf-8", newline="") as fh:
        rows(csv.writer(fh))
