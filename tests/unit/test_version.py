"""One version: pyproject.toml's. The packages read it; the image tags must repeat it.

And one Python: the ``requires-python`` pyproject declares is the one ruff, mypy and the
image's base target, and the one these tests run on.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import client
import predictor

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
# Our two images, wherever a tag is written for them: `image: kserve-detector:0.1.0`,
# `kserve-detector-web:0.1.0`, kustomize's `newTag: 0.1.0-gpu`, the version label.
_OUR_IMAGE = re.compile(r"(?<![\w./-])kserve-detector(?:-web)?:([\w.-]+)")
_NEW_TAG = re.compile(r"^\s*newTag:\s*\"?([\w.-]+)", re.M)
_LABEL = re.compile(r"app\.kubernetes\.io/version:\s*\"?([\w.-]+)")


def _tags(text: str) -> list[str]:
    found = [m.group(1) for p in (_OUR_IMAGE, _NEW_TAG, _LABEL) for m in p.finditer(text)]
    # A variant's tag is the version and a suffix: 0.1.0-gpu, 0.1.0-cuda.
    return [re.sub(r"-(gpu|cuda|cpu)$", "", tag) for tag in found]


def test_the_packages_report_pyprojects_version() -> None:
    assert predictor.__version__ == client.__version__ == VERSION


def test_the_makefile_tags_images_with_pyprojects_version() -> None:
    tag = re.search(r"^TAG \?= (\S+)$", (REPO / "Makefile").read_text(encoding="utf-8"), re.M)
    assert tag is not None
    assert tag.group(1) == VERSION


def test_the_manifests_and_kind_script_use_pyprojects_version() -> None:
    files = [*sorted((REPO / "manifests").rglob("*.yaml")), REPO / "scripts/kind-e2e.sh"]
    wrong = {f"{path.relative_to(REPO)}: {tag}" for path in files
             for tag in _tags(path.read_text(encoding="utf-8")) if tag != VERSION}
    assert not wrong, f"image tags or version labels other than pyproject's {VERSION}: {wrong}"
    assert any(_tags((REPO / "manifests/base/inferenceservice.yaml").read_text(encoding="utf-8")))


def test_one_python_version_everywhere() -> None:
    declared = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert declared is not None, "requires-python is a lower bound, e.g. >=3.11"
    major, minor = int(declared.group(1)), int(declared.group(2))
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"{major}.{minor}"
    base = re.search(r"^ARG BASE_IMAGE=python:(\d+)\.(\d+)-",
                     (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert base is not None
    assert (int(base.group(1)), int(base.group(2))) == (major, minor)
    assert sys.version_info >= (major, minor), (
        f"running on Python {sys.version.split()[0]}; pyproject.toml requires >={major}.{minor}")
