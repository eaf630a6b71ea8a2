"""What `scripts/kind-e2e.sh up` installs, and when (issue 29, items 3 and 5).

Run against the fake kubectl (_fake_kubectl.py) and its cluster, which refuses what a
real one refuses: here, cert-manager's webhook answering before its CA bundle is
injected.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._fakes import run_script

pytestmark = pytest.mark.k8s

# KEDA 2.18.0 has CVE-2025-68476, fixed in 2.18.3 (kedacore/keda v2.18.3 CHANGELOG.md);
# KServe v0.20.0's kserve-deps.env still pins 2.18.0 and flags the CVE beside it.
FIXED_KEDA = (2, 18, 3)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_keda_up_installs_a_release_without_cve_2025_68476(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up", KEDA="1")
    assert proc.returncode == 0, proc.stderr
    (url,) = re.findall(r"https://github\.com/kedacore/keda/releases/download/\S+", proc.stdout)
    tag, file_name = url.rsplit("/", 2)[-2:]
    assert tag == f"v{file_name.removeprefix('keda-').removesuffix('.yaml')}"
    installed = _version(tag.removeprefix("v"))
    assert installed[:2] == FIXED_KEDA[:2], "the 2.18 line is what KServe v0.20.0 is tested with"
    assert installed >= FIXED_KEDA, f"KEDA {tag} has CVE-2025-68476 (fixed in 2.18.3)"


def test_docs_name_the_keda_release_the_script_installs() -> None:
    from ._support import REPO_ROOT

    script = (REPO_ROOT / "scripts" / "kind-e2e.sh").read_text()
    (pinned,) = re.findall(r'KEDA_VERSION="\$\{KEDA_VERSION:-([0-9.]+)\}"', script)
    guide = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    named = set(re.findall(r"installs KEDA ([0-9.]+)", guide))
    assert named == {pinned}
