"""compat: the replacements were written for the versions that are pinned and installed."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from predictor.server import compat
from tests.support.servers import REPO


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt pins exact versions: {line!r}"
            pins[name.strip()] = pinned.strip()
    return pins


def test_written_for_the_pinned_and_installed_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for d in project["project"]["optional-dependencies"]["runtime"]
            if d.startswith("kserve")]
    assert pins == [f"kserve=={compat.WRITTEN_FOR['kserve']}"], (
        "kserve's pin moved: re-check every replacement listed in predictor/server/compat.py, "
        "then update WRITTEN_FOR and constraints.txt")
    assert _constraints() == compat.WRITTEN_FOR, (
        "constraints.txt and compat.WRITTEN_FOR name the same packages at the same versions")
    assert {p: version(p) for p in compat.WRITTEN_FOR} == compat.WRITTEN_FOR
    assert compat.versions_ok()


def test_another_version_is_a_warning_that_names_the_package(monkeypatch, caplog) -> None:
    monkeypatch.setattr(compat, "version",
                        lambda p: "0.99.0" if p == "uvicorn" else compat.WRITTEN_FOR[p])
    assert not compat.versions_ok()
    assert re.search(r"uvicorn 0\.99\.0 is installed; predictor\.server\.compat was written for "
                     r"0\.55\.0", caplog.text)
    assert "kserve 0.21.0 is installed" not in caplog.text
