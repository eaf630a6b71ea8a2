"""The CPU engine's cache folder: exported graphs kept between starts, only when private.

A graph read from a folder someone else can write to could be swapped for one that gives
wrong answers, so only a folder of our own (or root's, written at image build) is used.
OpenVINO keeps its compiled blobs in the same folder (``openvino/``), see
:class:`.ov_graph.Runtime`. A *verdict* records that the graphs for one key passed their
load-time checks (against eager, and the precision's check on the check pictures), with
what a warm start needs to skip the eager runs (measured on RetinaNet v2, three eager
passes over a 800x1066 input: most of a warm start).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .ov_graph import Runtime

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path | None:
    """``path``, created 0700; None (no cache) when someone else could write into it.

    A folder owned by root and written at image build time is trusted too (read-only
    to the server). A tampered graph would give wrong answers, so only our own counts.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        log.warning("cache dir %s unusable (%s): exporting without a cache", path, exc)
        return None
    if info.st_uid not in (os.getuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("cache dir %s is not private to this user: exporting without a cache", path)
        return None
    return path


def load_or_export(key: str, make: Callable[[], Any], folder: Path | None, runtime: Runtime
           ) -> tuple[Any, bool]:
    """The exported ``ov.Model`` named ``key``, from the cache when it is there;
    (model, cached). ``make`` exports it."""
    import openvino as ov

    path = folder / f"{key}.xml" if folder is not None else None
    if path is not None and path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return runtime.core.read_model(str(path)), True
        except Exception as exc:  # noqa: BLE001 - a truncated or stale file: export again
            log.warning("cached %s unreadable (%s): exporting again", path, exc)
    model = make()
    if path is not None:
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        try:
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot cache %s (%s)", path, exc)
    return model, False


def read_verdict(folder: Path | None, name: str) -> dict[str, Any] | None:
    """What a passed load-time check recorded under ``name``, or None."""
    if folder is None:
        return None
    path = folder / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cached verdict %s unreadable (%s): checking again", path, exc)
        return None
    return data if isinstance(data, dict) else None


def write_verdict(folder: Path | None, name: str, data: dict[str, Any]) -> None:
    """Records that the graphs named by ``name`` passed their check (atomically)."""
    if folder is None:
        return
    path = folder / f"{name}.json"
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache %s (%s)", path, exc)
