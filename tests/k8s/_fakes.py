"""Fake docker, kind, kubectl, curl and pytest for running scripts/kind-e2e.sh here.

Each fake appends its command line to ``$FAKE_CALLS`` and answers the few queries the
script reads, steered by ``FAKE_*`` variables. kubectl is the stateful stand-in in
_fake_kubectl.py (its cluster lives beside ``$FAKE_CALLS``, so successive runs in one
test see the same cluster). ``kubectl port-forward`` really listens
on its local port (a small Python process), so the script's wait for the forward works
as on a cluster. No fake reaches a network or a container engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._support import REPO_ROOT

# What the script reads from its repository; linked into a per-test copy so that
# what it writes (out/) stays in the test's folder.
LINKED = ("scripts", "manifests", "kind-config.yaml", "Dockerfile", "demo")

FAILING_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_CALLS"
echo "$(basename "$0") must not run in a dry run" >&2
exit 97
"""

# `load image-archive FILE` puts the archive's images on the node ($FAKE_CALLS.images),
# where the fake cluster's kubelet looks for them.
FAKE_KIND = """#!/bin/sh
echo "kind $*" >> "$FAKE_CALLS"
if [ "$1 $2" = "get clusters" ] && [ -n "${FAKE_CLUSTERS:-}" ]; then
    echo "$FAKE_CLUSTERS"
fi
if [ "$1 $2" = "load image-archive" ]; then
    cat "$3" >> "$FAKE_CALLS.images"
fi
exit 0
"""

# The kubectl stand-in is a program (_fake_kubectl.py): it keeps the cluster's state
# and refuses what the real kubectl and API server refuse where the script's bugs lived.
FAKE_KUBECTL = """#!/bin/sh
exec "$FAKE_PYTHON" "$FAKE_KUBECTL_PY" "$@"
"""

# FAKE_SAVE_PLATFORM=1: this docker's `image save` knows --platform (Docker >= 28).
FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >> "$FAKE_CALLS"
case "$*" in
    "image save --help") [ "${FAKE_SAVE_PLATFORM:-0}" = 1 ] && echo "  --platform string" ;;
    "version --format"*) echo "linux/arm64" ;;
    "image inspect"*) echo "sha256:0123abcd" ;;
    "image save"*)
        out=""; prev=""; image=""
        for arg in "$@"; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; image="$arg"; done
        echo "$image" > "$out" ;;
esac
exit 0
"""

# FAKE_WEB_ANSWER: the body POST /api/detect returns; FAKE_PROM_ANSWER: Prometheus's
# answer to a query.
FAKE_CURL = """#!/bin/sh
echo "curl $*" >> "$FAKE_CALLS"
out=""; prev=""
for arg in "$@"; do [ "$prev" = "-o" ] && out="$arg"; prev="$arg"; done
answer='{"results": [{"detections": []}]}'
if [ -n "${FAKE_WEB_ANSWER:-}" ]; then answer="$FAKE_WEB_ANSWER"; fi
prom='{"status": "success", "data": {"resultType": "vector",
 "result": [{"metric": {}, "value": [1, "3"]}]}}'
if [ -n "${FAKE_PROM_ANSWER:-}" ]; then prom="$FAKE_PROM_ANSWER"; fi
case "$*" in
    *"/api/detect"*) printf '%s' "$answer" > "$out" ;;
    *"/api/v1/query"*) printf '%s' "$prom" > "$out" ;;
    *) printf '{"status": "ok"}' > "$out" ;;
esac
exit 0
"""

FAKE_PYTEST = """#!/bin/sh
echo "pytest $* E2E_BASE_URL=$E2E_BASE_URL E2E_GRPC_TARGET=$E2E_GRPC_TARGET" >> "$FAKE_CALLS"
exit "${FAKE_PYTEST_RC:-0}"
"""

SUCCEEDING_TOOLS = {"kind": FAKE_KIND, "kubectl": FAKE_KUBECTL, "docker": FAKE_DOCKER,
                    "curl": FAKE_CURL}


def install(bin_dir: Path, tools: dict[str, str]) -> None:
    """Writes executable fakes into ``bin_dir``."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)


def repo(tmp_path: Path) -> Path:
    """The test's copy of the repository: links to the real files, its own out/."""
    root = tmp_path / "repo"
    if not root.exists():
        root.mkdir()
        for name in LINKED:
            (root / name).symlink_to(REPO_ROOT / name)
    return root


def run_script(tmp_path: Path, *args: str, tools: dict[str, str] | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Runs the script with fake tools first on PATH and only the given settings."""
    script = repo(tmp_path) / "scripts" / "kind-e2e.sh"
    bin_dir = tmp_path / "bin"
    install(bin_dir, tools or {t: FAILING_TOOL for t in ("docker", "kind", "kubectl", "curl")})
    install(tmp_path / "pytest-bin", {"pytest": FAKE_PYTEST})
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LANG": "C",
        "FAKE_CALLS": str(tmp_path / "calls.log"),
        "FAKE_PYTHON": sys.executable,
        "FAKE_KUBECTL_PY": str(Path(__file__).with_name("_fake_kubectl.py")),
        "FAKE_REAL_KUBECTL": shutil.which("kubectl") or "",
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        **env,
    }
    return subprocess.run(["bash", str(script), *args], env=full_env, capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path)


def calls(tmp_path: Path) -> list[str]:
    """Commands the fake tools were run with."""
    log = tmp_path / "calls.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def first_line_with(lines: list[str], needle: str) -> int:
    """Index of the first line containing ``needle`` (fails the test when none does)."""
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"no step mentions {needle!r}:\n" + "\n".join(lines))


def state_file(tmp_path: Path) -> Path:
    """Where the fake kubectl keeps the test's cluster (beside the calls log)."""
    return tmp_path / "calls.log.state.json"


def on_node(tmp_path: Path, *images: str) -> None:
    """Puts images on the fake kind node, as `kind load image-archive` does."""
    with open(tmp_path / "calls.log.images", "a") as node:
        node.write("".join(f"{image}\n" for image in images))


def forget_calls(tmp_path: Path) -> None:
    """Empties the calls log (the cluster stays), to look at one run's calls."""
    (tmp_path / "calls.log").write_text("")


def kubectl(tmp_path: Path, *args: str, stdin: str | None = None,
            cwd: Path | None = None, **fake: str) -> subprocess.CompletedProcess[str]:
    """Runs the fake kubectl alone on the test's cluster (as a user typing it would);
    ``fake`` sets FAKE_* knobs for this call."""
    env = {**os.environ, "FAKE_CALLS": str(tmp_path / "calls.log"),
           "FAKE_REAL_KUBECTL": shutil.which("kubectl") or "", **fake}
    return subprocess.run([sys.executable, str(Path(__file__).with_name("_fake_kubectl.py")),
                           *args], input=stdin, env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd or repo(tmp_path))


def cluster_object(tmp_path: Path, kind: str, namespace: str | None, name: str
                   ) -> dict[str, Any] | None:
    """One object of the test's fake cluster, as the fake kubectl stored it."""
    path = state_file(tmp_path)
    if not path.exists():
        return None
    found: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8"))["objects"].get(
        f"{kind}/{namespace or ''}/{name}")
    return found

