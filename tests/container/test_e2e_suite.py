"""The shared end-to-end suite (tests/e2e), run against the container as its base URL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ._docker import DEMO_MODEL_DIR, REPO_ROOT, Container

pytestmark = pytest.mark.container

E2E_DIR = REPO_ROOT / "tests" / "e2e"


@pytest.fixture
def e2e_target(request: pytest.FixtureRequest) -> tuple[Container, bool]:
    """The shipped image (demo weights); random weights mounted until the demo exists."""
    if (DEMO_MODEL_DIR / "config.json").is_file():
        return request.getfixturevalue("demo_container"), True
    return request.getfixturevalue("random_model_container"), False


def test_e2e_suite_passes_against_container(e2e_target: tuple[Container, bool]) -> None:
    """`pytest tests/e2e` with E2E_BASE_URL pointing at the running image passes."""
    if not (E2E_DIR / "conftest.py").is_file():
        pytest.skip("tests/e2e is not there")
    container, demo = e2e_target
    env = {**os.environ,
           "E2E_BASE_URL": container.http_url,
           "E2E_GRPC_TARGET": container.grpc_url,
           "E2E_MODEL_NAME": "detector",
           "E2E_DEMO": "1" if demo else "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(E2E_DIR), "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode == 5:
        pytest.skip("tests/e2e collected no tests")
    assert proc.returncode == 0, f"tests/e2e failed against the container:\n{proc.stdout[-6000:]}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary, f"tests/e2e ran nothing against the container: {summary}"
    print(f"tests/e2e against {container.http_url}: {summary}")
