"""The shared end-to-end suite (tests/e2e), run against the container as its base URL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ._docker import REPO_ROOT, Container

pytestmark = pytest.mark.container

E2E_DIR = REPO_ROOT / "tests" / "e2e"


def test_e2e_suite_passes_against_container(demo_container: Container) -> None:
    """`pytest tests/e2e` with E2E_BASE_URL pointing at the running image passes."""
    if not E2E_DIR.is_dir():
        pytest.skip("tests/e2e is not there")
    env = {**os.environ,
           "E2E_BASE_URL": demo_container.http_url,
           "E2E_GRPC_TARGET": demo_container.grpc_target,
           "E2E_GRPC_URL": demo_container.grpc_target,
           "E2E_MODEL_NAME": "detector"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(E2E_DIR), "-q", "-p", "no:cacheprovider",
         "-m", "e2e or not e2e"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode == 5:
        pytest.skip("tests/e2e collected no tests")
    assert proc.returncode == 0, f"tests/e2e failed against the container:\n{proc.stdout[-6000:]}"
    print(proc.stdout.strip().splitlines()[-1])
