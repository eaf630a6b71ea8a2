"""scripts/kind-e2e.sh without Docker, kind or a cluster.

Dry runs are checked with failing ``docker``/``kind``/``kubectl`` first on PATH, so a
dry run that ran anything would fail and leave a trace. The real code path is
checked with fakes that succeed or fail on cue: reusing an existing cluster,
refusing an old one, and dumping diagnostics when a step fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import REPO_ROOT, SCRIPTS_DIR

pytestmark = pytest.mark.k8s

SCRIPT = SCRIPTS_DIR / "kind-e2e.sh"

FAILING_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_CALLS"
echo "$(basename "$0") must not run in a dry run" >&2
exit 97
"""

FAKE_KIND = """#!/bin/sh
echo "kind $*" >> "$FAKE_CALLS"
if [ "$1 $2" = "get clusters" ] && [ -n "${FAKE_CLUSTERS:-}" ]; then
    echo "$FAKE_CLUSTERS"
fi
exit 0
"""

FAKE_KUBECTL = """#!/bin/sh
echo "kubectl $*" >> "$FAKE_CALLS"
if [ -n "${FAKE_FAIL:-}" ]; then
    case "$*" in *"$FAKE_FAIL"*) echo "fake kubectl: failing on purpose" >&2; exit 1 ;; esac
fi
case "$*" in
    *"get --raw /version"*)
        printf '{\\n  "major": "1",\\n  "minor": "%s"\\n}\\n' "${FAKE_MINOR:-34}" ;;
esac
exit 0
"""

FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >> "$FAKE_CALLS"
exit 0
"""


def _install(bin_dir: Path, tools: dict[str, str]) -> None:
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)


def run_script(tmp_path: Path, *args: str, tools: dict[str, str] | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Runs the script with fake tools first on PATH and only the given settings."""
    bin_dir = tmp_path / "bin"
    _install(bin_dir, tools or {t: FAILING_TOOL for t in ("docker", "kind", "kubectl")})
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LANG": "C",
        "FAKE_CALLS": str(tmp_path / "calls.log"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path)


def calls(tmp_path: Path) -> list[str]:
    """Commands the fake tools were run with."""
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def first_line_with(lines: list[str], needle: str) -> int:
    """Index of the first line containing ``needle`` (fails the test when none does)."""
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"no step mentions {needle!r}:\n" + "\n".join(lines))


# --- dry run -------------------------------------------------------------------------

def test_dry_run_prints_every_step_in_order_and_runs_nothing(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "all")
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path) == [], "a dry run ran docker, kind or kubectl"
    lines = proc.stdout.splitlines()
    order = [
        "kind create cluster --name kserve-detector",
        "cert-manager/releases/download/v1.17.0/cert-manager.yaml",
        "kserve/releases/download/v0.20.0/kserve.yaml",
        "docker build -t kserve-detector:0.1.0",
        "kind load docker-image kserve-detector:0.1.0 --name kserve-detector",
        "apply -k",
        "wait --for=condition=Ready inferenceservice/detector",
        "port-forward --address 127.0.0.1 svc/detector-predictor",
        "E2E_BASE_URL=http://127.0.0.1:18080",
    ]
    positions = [first_line_with(lines, step) for step in order]
    assert positions == sorted(positions), "steps out of order:\n" + proc.stdout
    test_line = lines[positions[-1]]
    assert "E2E_MODEL_NAME=detector" in test_line
    assert test_line.rstrip().endswith("tests/e2e")
    assert str(REPO_ROOT / ".venv" / "bin" / "pytest") in test_line


def test_dry_run_never_uses_kubectl_without_the_kind_context(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "all", DRY_RUN="1", KNATIVE="1", KEDA="1")
    assert proc.returncode == 0, proc.stderr
    kubectl_lines = [ln for ln in proc.stdout.splitlines() if "kubectl" in ln]
    assert kubectl_lines
    for line in kubectl_lines:
        # Each kubectl in the line (pipelines have two) is pinned to the kind cluster.
        assert line.count("kubectl") == line.count("kubectl --context kind-kserve-detector"), line


def test_environment_overrides_reach_every_step(tmp_path: Path) -> None:
    image = "registry.example.com:5000/team/detector:1.2.3"
    proc = run_script(tmp_path, "--dry-run", "all", CLUSTER_NAME="ci-7", NAMESPACE="ns-x",
                      IMAGE=image, LOCAL_PORT="19999", WAIT_TIMEOUT="42s")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "kind create cluster --name ci-7" in out
    assert f"docker build -t {image}" in out
    assert f"kind load docker-image {image} --name ci-7" in out
    assert "newName: registry.example.com:5000/team/detector" in out
    assert 'newTag: "1.2.3"' in out
    assert "namespace: ns-x" in out
    assert "-n ns-x wait --for=condition=Ready inferenceservice/detector --timeout=42s" in out
    assert "E2E_BASE_URL=http://127.0.0.1:19999" in out
    assert "kind-kserve-detector" not in out


@pytest.mark.parametrize("knative", ["0", "1"])
def test_generated_deploy_kustomization_renders_what_the_script_tests(
        tmp_path: Path, knative: str, render: Any,
        schema_errors: Callable[[dict[str, Any]], list[str]]) -> None:
    image = "registry.example.com/team/detector:1.2.3"
    proc = run_script(tmp_path, "--dry-run", "deploy", IMAGE=image, NAMESPACE="ns-x",
                      KNATIVE=knative)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = first_line_with(lines, "+ write ")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("+ "))
    # Same layout as in the repository: <root>/out/kind-e2e-deploy next to manifests/.
    deploy_dir = tmp_path / "root" / "out" / "kind-e2e-deploy"
    deploy_dir.mkdir(parents=True)
    (tmp_path / "root" / "manifests").symlink_to(REPO_ROOT / "manifests")
    (deploy_dir / "kustomization.yaml").write_text("\n".join(lines[start + 1:end]) + "\n")
    (isvc,) = render(deploy_dir)
    assert schema_errors(isvc) == []
    assert isvc["metadata"]["namespace"] == "ns-x"
    assert isvc["metadata"]["name"] == "detector"
    predictor = isvc["spec"]["predictor"]
    assert predictor["containers"][0]["image"] == image
    assert predictor["annotations"]["kserve-detector/image-id"] == "IMAGE_ID"
    wanted_mode = "Knative" if knative == "1" else "Standard"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == wanted_mode


def test_knative_flag_installs_knative_before_kserve(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up", KNATIVE="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    knative = first_line_with(lines, "serving/releases/download/knative-v1.21.1/serving-core")
    kourier = first_line_with(lines, "net-kourier")
    kserve = first_line_with(lines, "kserve/releases/download/v0.20.0/kserve.yaml")
    assert knative < kourier < kserve
    assert '\\"defaultDeploymentMode\\":\\"Knative\\"' in proc.stdout
    deploy = run_script(tmp_path, "--dry-run", "deploy", KNATIVE="1")
    assert "manifests/overlays/kind-knative" in deploy.stdout


def test_standard_mode_is_the_default(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up")
    assert '\\"defaultDeploymentMode\\":\\"Standard\\"' in proc.stdout
    assert "knative" not in proc.stdout.lower()


def test_skip_build_loads_the_existing_image(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", SKIP_BUILD="1")
    assert proc.returncode == 0, proc.stderr
    assert "docker build" not in proc.stdout
    assert "kind load docker-image kserve-detector:0.1.0" in proc.stdout


def test_down_deletes_only_the_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "down")
    assert proc.returncode == 0, proc.stderr
    commands = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ ")]
    assert commands == ["+ kind delete cluster --name kserve-detector"]


@pytest.mark.parametrize("args", [[], ["bogus"], ["up", "down"]])
def test_bad_usage_exits_non_zero_with_help(tmp_path: Path, args: list[str]) -> None:
    proc = run_script(tmp_path, *args)
    assert proc.returncode != 0
    assert calls(tmp_path) == []
    if args != ["up", "down"]:
        assert "Usage:" in proc.stderr


def test_untagged_image_is_refused(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", IMAGE="registry:5000/kserve-detector")
    assert proc.returncode != 0
    assert "IMAGE must carry a tag" in proc.stderr


def test_unknown_overlay_is_refused(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY="prod")
    assert proc.returncode != 0
    assert "manifests/overlays/prod" in proc.stderr


# --- real code path, fake tools ------------------------------------------------------

SUCCEEDING_TOOLS = {"kind": FAKE_KIND, "kubectl": FAKE_KUBECTL, "docker": FAKE_DOCKER}


def test_up_reuses_an_existing_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS,
                      FAKE_CLUSTERS="other\nkserve-detector")
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    assert "kind get clusters" in ran
    assert not any(c.startswith("kind create") for c in ran)
    assert any("kserve-cluster-resources.yaml" in c for c in ran)


def test_up_creates_a_missing_cluster_from_the_config(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other")
    assert proc.returncode == 0, proc.stderr
    assert (f"kind create cluster --name kserve-detector --config {REPO_ROOT / 'kind-config.yaml'}"
            in " | ".join(calls(tmp_path)))


def test_up_refuses_a_cluster_too_old_for_kserve(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_MINOR="30")
    assert proc.returncode != 0
    assert "1.30" in proc.stderr
    assert "1.32" in proc.stderr
    assert not any("apply" in c for c in calls(tmp_path))


def test_failure_dumps_diagnostics_and_keeps_the_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL="deployment/kserve-controller-manager --timeout")
    assert proc.returncode != 0
    ran = calls(tmp_path)
    assert any("get inferenceservice detector -o yaml" in c for c in ran)
    assert any(" logs -l serving.kserve.io/inferenceservice=detector" in c for c in ran)
    assert any("get events" in c for c in ran)
    assert not any(c.startswith("kind delete") for c in ran)
    assert "kept for inspection" in proc.stderr
    dumps = list((tmp_path / "artifacts").glob("diagnostics-*.txt"))
    assert len(dumps) == 1
    assert "get events" in dumps[0].read_text()


def test_failure_with_teardown_deletes_the_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "all", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL="deployment/kserve-controller-manager --timeout", TEARDOWN="1")
    assert proc.returncode != 0
    assert "kind delete cluster --name kserve-detector" in calls(tmp_path)
