"""Issue 19, finding 3: the documented canary rollout, run as written.

The commands are read from docs/kubernetes.md ("Canary rollout") and run by bash
against the fake cluster after `KNATIVE=1 scripts/kind-e2e.sh up`. The fake follows
KServe v0.20.0 where the documented canary broke: the deployment mode of an existing
InferenceService cannot change (validateDeploymentMode), and canaryTrafficPercent
splits traffic only when a revision has rolled out before (ksvc_reconciler.go).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ._fakes import SUCCEEDING_TOOLS, install, kubectl, on_node, repo
from ._support import REPO_ROOT, kustomize_command

pytestmark = pytest.mark.k8s

Installed = Callable[[str], None]
GUIDE = REPO_ROOT / "docs" / "kubernetes.md"


def _blocks(heading: str) -> list[str]:
    """The bash blocks of one section of the guide, in order."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)


def _run(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """A block of the guide, run by bash with the fake kubectl first on PATH."""
    install(tmp_path / "bin", {"kubectl": SUCCEEDING_TOOLS["kubectl"]})
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "FAKE_CALLS": str(tmp_path / "calls.log"), "FAKE_PYTHON": sys.executable,
           "FAKE_KUBECTL_PY": str(Path(__file__).with_name("_fake_kubectl.py")),
           "FAKE_REAL_KUBECTL": shutil.which("kubectl") or ""}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                          cwd=repo(tmp_path), capture_output=True, text=True, timeout=120,
                          check=False)


def _traffic(tmp_path: Path) -> list[dict[str, object]]:
    proc = kubectl(tmp_path, "get", "isvc", "detector", "-n", "ml", "-o",
                   "jsonpath={.status.components.predictor.traffic}")
    assert proc.returncode == 0, proc.stderr
    traffic: list[dict[str, object]] = json.loads(proc.stdout)
    return traffic


@pytest.fixture
def knative_cluster(tmp_path: Path, installed: Installed) -> Path:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    installed("knative")
    proc = kubectl(tmp_path, "create", "namespace", "ml")
    assert proc.returncode == 0, proc.stderr
    # What the guide has the user do first: the image where the node can pull it, and
    # the storage credentials the model overlay's ServiceAccount lists.
    on_node(tmp_path, "kserve-detector:0.1.0")
    proc = kubectl(tmp_path, "apply", "-n", "ml", "-f",
                   "manifests/components/storage-credentials/secret.example.yaml")
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def test_documented_canary_sends_ten_percent_to_v2_and_the_rest_to_v1(
        knative_cluster: Path) -> None:
    steps, *_ = _blocks("Canary rollout")
    proc = _run(knative_cluster, steps)
    assert proc.returncode == 0, proc.stderr
    traffic = json.loads(proc.stdout.strip().splitlines()[-1])
    assert traffic == [
        {"tag": "latest", "revisionName": "detector-predictor-00002", "latestRevision": True,
         "percent": 10},
        {"tag": "prev", "revisionName": "detector-predictor-00001", "latestRevision": False,
         "percent": 90}]


def test_documented_promotion_sends_everything_to_v2(knative_cluster: Path) -> None:
    steps, _, promote = _blocks("Canary rollout")
    assert _run(knative_cluster, steps).returncode == 0
    proc = _run(knative_cluster, promote)
    assert proc.returncode == 0, proc.stderr
    assert [(t["revisionName"], t["percent"]) for t in _traffic(knative_cluster)] == [
        ("detector-predictor-00002", 100)]


def test_canary_over_a_standard_mode_model_is_refused(knative_cluster: Path) -> None:
    # What the old guide led to: `model` (Standard) running, then the canary.
    assert kubectl(knative_cluster, "apply", "-k", "manifests/overlays/model", "-n",
                   "ml").returncode == 0
    proc = kubectl(knative_cluster, "apply", "-k", "manifests/overlays/knative-canary", "-n",
                   "ml")
    assert proc.returncode == 1
    assert "deploymentMode cannot be changed from 'Standard' to 'Knative'" in proc.stderr


def test_canary_applied_alone_sends_everything_to_the_new_weights(
        knative_cluster: Path) -> None:
    # Why the guide starts from knative-model: no earlier revision, no split.
    assert kubectl(knative_cluster, "apply", "-k", "manifests/overlays/knative-canary", "-n",
                   "ml").returncode == 0
    assert kubectl(knative_cluster, "wait", "--for=condition=Ready", "isvc/detector", "-n",
                   "ml").returncode == 0
    # The first revision takes 100 %, rolls out, and the "split" then lands on that
    # same revision (KServe's PropagateStatus): every request goes to v2's weights.
    shares: dict[object, int] = {}
    for target in _traffic(knative_cluster):
        shares[target["revisionName"]] = shares.get(target["revisionName"], 0) + int(
            str(target["percent"]))
    assert shares == {"detector-predictor-00001": 100}
