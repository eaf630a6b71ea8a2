"""Every shell script in scripts/ is shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ._support import SCRIPTS_DIR

pytestmark = pytest.mark.k8s


def _shell_scripts() -> list[Path]:
    scripts = []
    for path in sorted(SCRIPTS_DIR.glob("*")):
        if not path.is_file():
            continue
        first_line = path.read_text(errors="replace").split("\n", 1)[0]
        if path.suffix == ".sh" or ("sh" in first_line and first_line.startswith("#!")):
            scripts.append(path)
    return scripts


SCRIPTS = _shell_scripts()


def test_the_kind_script_is_found() -> None:
    assert SCRIPTS_DIR / "kind-e2e.sh" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    proc = subprocess.run(["shellcheck", "--external-sources", script.name],
                          cwd=script.parent, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Sourced libraries (not executable) run under their caller's settings.
EXECUTABLES = [p for p in SCRIPTS if p.stat().st_mode & 0o111]


@pytest.mark.parametrize("script", EXECUTABLES, ids=[p.name for p in EXECUTABLES])
def test_script_stops_on_errors(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    if "bash" in text.split("\n", 1)[0]:
        assert "set -euo pipefail" in text, f"{script.name}: a failing step would be ignored"
    else:
        assert "set -eu" in text, f"{script.name}: a failing step would be ignored"


def test_kind_script_is_executable() -> None:
    # The Makefile runs it directly.
    assert (SCRIPTS_DIR / "kind-e2e.sh").stat().st_mode & 0o111
