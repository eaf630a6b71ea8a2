"""compat: the replacements were written for the kserve that is pinned and installed."""

from __future__ import annotations

import re
from importlib.metadata import version

import tomllib

from predictor.server import compat
from tests.support.servers import REPO


def test_written_for_the_pinned_and_installed_kserve() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["optional-dependencies"]["server"]
            if d.startswith("kserve")]
    assert pins == [f"kserve=={compat.WRITTEN_FOR}"], (
        "kserve's pin moved: re-check every replacement listed in predictor/server/compat.py, "
        "then update WRITTEN_FOR")
    assert version("kserve") == compat.WRITTEN_FOR
    assert compat.kserve_version_ok()


def test_another_version_is_a_warning_that_names_the_module(monkeypatch, caplog) -> None:
    monkeypatch.setattr(compat, "version", lambda _: "0.99.0")
    assert not compat.kserve_version_ok()
    assert re.search(r"kserve 0\.99\.0 is installed; predictor\.server\.compat was written for",
                     caplog.text)
