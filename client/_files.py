"""The CLI's file handling: expanding arguments to image files, naming outputs."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._exceptions import UnreadableInput

__all__ = ["IMAGE_SUFFIXES", "drawing_names", "expand_inputs"]

# What a folder contributes; files named explicitly are sent whatever their suffix.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_GLOB_CHARS = frozenset("*?[")


def expand_inputs(args: Sequence[str], *, recursive: bool = False) -> list[Path]:
    """Files, folders and glob patterns to a list of files, in argument order.

    Folders contribute their image files (by suffix, sorted by name; with
    ``recursive``, those of subfolders too). Duplicates are dropped.

    Raises:
        UnreadableInput: A path does not exist, or a pattern or folder yields no image.
    """
    files: list[Path] = []
    for arg in args:
        if os.path.isdir(arg):
            found = _images_in(Path(arg), recursive)
            if not found:
                raise UnreadableInput(f"no image files in folder {arg}")
            files.extend(found)
        elif os.path.exists(arg):
            files.append(Path(arg))
        elif _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            found = [Path(m) for m in matches if os.path.isfile(m)]
            if not found:
                raise UnreadableInput(f"no files match {arg}")
            files.extend(found)
        else:
            raise UnreadableInput(f"cannot read {arg}: no such file or folder")
    return _unique(files)


def drawing_names(files: Iterable[Path], outdir: Path) -> list[Path]:
    """One PNG path in ``outdir`` per input, named after it, never two alike."""
    taken: set[str] = set()
    names = []
    for path in files:
        stem = path.stem or "image"
        candidate, n = f"{stem}.png", 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}.png"
        taken.add(candidate.lower())
        names.append(outdir / candidate)
    return names


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(
        (p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: str(p),
    )


def _unique(files: list[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for path in files:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out
