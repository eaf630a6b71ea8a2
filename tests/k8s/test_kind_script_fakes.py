"""scripts/kind-e2e.sh on its real code path, with fake docker, kind, kubectl and curl.

The fakes (``_fakes.py``) record every call and answer on cue: a namespace that is
missing, a Service without a gRPC port, a webhook that refuses a few times, a docker
whose ``image save`` knows ``--platform``, a web app that answers badly. Each test
names the finding of issue 12 it guards; run against the script as it was, each of
these would have failed.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ._fakes import SUCCEEDING_TOOLS, calls, first_line_with, forget_calls, repo, run_script

pytestmark = pytest.mark.k8s

RESOURCES = "v0.20.0/kserve-cluster-resources.yaml"
Installed = Callable[[str], None]


def _free_ports(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _e2e_env(tmp_path: Path) -> dict[str, str]:
    rest, grpc, web = _free_ports(3)
    return {"LOCAL_PORT": rest, "LOCAL_GRPC_PORT": grpc, "LOCAL_WEB_PORT": web,
            "PYTEST": str(tmp_path / "pytest-bin" / "pytest"),
            "PYTHON": sys.executable}


# --- up ------------------------------------------------------------------------------

def test_up_reuses_an_existing_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS,
                      FAKE_CLUSTERS="other\nkserve-detector")
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    assert "kind get clusters" in ran
    assert not any(c.startswith("kind create") for c in ran)
    assert any(RESOURCES in c for c in ran)


def test_up_creates_a_missing_cluster_from_the_config(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other")
    assert proc.returncode == 0, proc.stderr
    config = repo(tmp_path) / "kind-config.yaml"
    assert any(c.startswith(f"kind create cluster --name kserve-detector --config {config}")
               for c in calls(tmp_path))


def test_up_refuses_a_cluster_too_old_for_kserve(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_MINOR="30")
    assert proc.returncode != 0
    assert "1.30" in proc.stderr
    assert "1.32" in proc.stderr
    assert not any("apply" in c for c in calls(tmp_path))


def test_up_creates_the_kserve_namespace_before_applying_kserve(tmp_path: Path) -> None:
    # Finding 1: the release's kserve.yaml has no Namespace object since v0.17.
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_MISSING_NAMESPACES="kserve")
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    created = first_line_with(ran, "create namespace kserve")
    assert created < first_line_with(ran, "v0.20.0/kserve.yaml")


def test_up_again_keeps_the_existing_kserve_namespace(tmp_path: Path) -> None:
    first = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector")
    assert first.returncode == 0, first.stderr
    forget_calls(tmp_path)
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector")
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    assert any("get namespace kserve" in c for c in ran)
    assert not any("create namespace" in c for c in ran), "kubectl create fails on a second run"


def test_cluster_resources_wait_for_every_kserve_controller(tmp_path: Path) -> None:
    # Finding 2: LLMInferenceServiceConfigs go through llmisvc-controller-manager's
    # fail-closed webhook, not only kserve-controller-manager's.
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector")
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    wait = first_line_with(ran, "-n kserve wait --for=condition=Available deployment --all")
    assert first_line_with(ran, "v0.20.0/kserve.yaml") < wait < first_line_with(ran, RESOURCES)
    assert not any("deployment/kserve-controller-manager" in c and "wait" in c for c in ran), (
        "waiting for one controller leaves the llmisvc webhook racing")


def test_cluster_resources_are_retried_while_webhooks_start(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL=RESOURCES, FAKE_FAIL_TIMES="2", WEBHOOK_RETRY_DELAY="0")
    assert proc.returncode == 0, proc.stderr
    assert sum(RESOURCES in c for c in calls(tmp_path)) == 3


def test_cluster_resources_retries_are_bounded(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL=RESOURCES, WEBHOOK_RETRIES="4", WEBHOOK_RETRY_DELAY="0")
    assert proc.returncode != 0
    assert sum(RESOURCES in c and "apply" in c for c in calls(tmp_path)) == 4
    assert "kept for inspection" in proc.stderr


def test_failure_dumps_diagnostics_and_keeps_the_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL="-n kserve wait")
    assert proc.returncode != 0
    ran = calls(tmp_path)
    assert any("get inferenceservice detector -o yaml" in c for c in ran)
    assert any(" logs -l serving.kserve.io/inferenceservice=detector" in c for c in ran)
    assert any("logs deployment/detector-web" in c for c in ran)
    assert any("get events" in c for c in ran)
    assert not any(c.startswith("kind delete") for c in ran)
    assert "kept for inspection" in proc.stderr
    dumps = list((tmp_path / "artifacts").glob("diagnostics-*.txt"))
    assert len(dumps) == 1
    assert "get events" in dumps[0].read_text(encoding="utf-8")


def test_failure_with_teardown_deletes_the_cluster(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "all", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="kserve-detector",
                      FAKE_FAIL="-n kserve wait", TEARDOWN="1")
    assert proc.returncode != 0
    assert "kind delete cluster --name kserve-detector" in calls(tmp_path)


# --- deploy --------------------------------------------------------------------------

@pytest.mark.parametrize("save_platform", ["1", "0"])
def test_images_reach_kind_through_a_single_platform_archive(
        tmp_path: Path, save_platform: str, installed: Installed) -> None:
    # Finding 6: `kind load docker-image` fails on attestation manifests
    # (kubernetes-sigs/kind#3795); Docker >= 28 can save one platform.
    installed("standard")
    proc = run_script(tmp_path, "deploy", tools=SUCCEEDING_TOOLS,
                      FAKE_SAVE_PLATFORM=save_platform)
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    archive = tmp_path / "artifacts" / "image.tar"
    platform = "--platform linux/arm64 " if save_platform == "1" else ""
    for image in ("kserve-detector:0.1.0", "kserve-detector-web:0.1.0"):
        saved = first_line_with(ran, f"docker image save {platform}-o {archive} {image}")
        loaded = ran[saved + 1:].index(f"kind load image-archive {archive} --name kserve-detector")
        assert loaded >= 0
    assert not any("kind load docker-image" in c for c in ran)
    assert not archive.exists(), "the multi-GB archive is left behind"


def test_deploy_builds_named_stages_and_deploys_the_app_after_ready(
        tmp_path: Path, installed: Installed) -> None:
    installed("standard")
    proc = run_script(tmp_path, "deploy", tools=SUCCEEDING_TOOLS)
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    root = repo(tmp_path)
    assert f"docker build --target runtime -t kserve-detector:0.1.0 {root}" in ran
    assert f"docker build --target web -t kserve-detector-web:0.1.0 {root}" in ran
    ready = first_line_with(ran, "wait --for=condition=Ready inferenceservice/detector")
    app = first_line_with(ran, f"apply -k {root / 'out' / 'kind-e2e-app'}")
    rollout = first_line_with(ran, "rollout status deployment/detector-web")
    assert ready < app < rollout


# --- e2e -----------------------------------------------------------------------------

def test_e2e_reaches_grpc_through_the_predictor_service(tmp_path: Path) -> None:
    # Finding 5: Standard mode makes one Service port per container port.
    env = _e2e_env(tmp_path)
    proc = run_script(tmp_path, "e2e", tools=SUCCEEDING_TOOLS, **env)
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    assert any(c.endswith(f"svc/detector-predictor {env['LOCAL_PORT']}:80") for c in ran)
    assert any(c.endswith(f"svc/detector-predictor {env['LOCAL_GRPC_PORT']}:8081") for c in ran)
    test_run = ran[first_line_with(ran, "pytest tests/e2e")]
    assert f"E2E_GRPC_TARGET=127.0.0.1:{env['LOCAL_GRPC_PORT']}" in test_run


def test_e2e_stops_when_the_service_has_no_grpc_port(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "e2e", tools=SUCCEEDING_TOOLS, FAKE_SERVICE_PORTS="http1=80",
                      **_e2e_env(tmp_path))
    assert proc.returncode != 0
    assert "no h2c port" in proc.stderr
    assert not any(c.startswith("pytest") for c in calls(tmp_path))


def test_e2e_calls_the_web_app_with_one_picture(tmp_path: Path) -> None:
    env = _e2e_env(tmp_path)
    proc = run_script(tmp_path, "e2e", tools=SUCCEEDING_TOOLS, **env)
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    assert any(c.endswith(f"svc/detector-web {env['LOCAL_WEB_PORT']}:80") for c in ran)
    health = first_line_with(ran, f"http://127.0.0.1:{env['LOCAL_WEB_PORT']}/healthz")
    detect = first_line_with(ran, f"http://127.0.0.1:{env['LOCAL_WEB_PORT']}/api/detect")
    assert first_line_with(ran, "pytest tests/e2e") < health < detect
    picture = tmp_path / "artifacts" / "web-picture" / "images" / "000000.png"
    assert f"file=@{picture};type=image/png" in ran[detect]
    assert picture.read_bytes().startswith(b"\x89PNG"), "the picture sent is a real PNG"
    assert "1 result(s) for 1 picture(s)" in proc.stdout


@pytest.mark.parametrize("answer", ['{"error": "inference service unavailable"}',
                                    '{"results": []}', "<html>502</html>"])
def test_e2e_fails_on_a_web_answer_without_results(tmp_path: Path, answer: str) -> None:
    proc = run_script(tmp_path, "e2e", tools=SUCCEEDING_TOOLS, FAKE_WEB_ANSWER=answer,
                      **_e2e_env(tmp_path))
    assert proc.returncode != 0
    assert "/api/detect" in proc.stderr
    assert any("logs deployment/detector-web" in c for c in calls(tmp_path)), "no diagnostics"
