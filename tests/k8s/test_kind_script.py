"""scripts/kind-e2e.sh in a dry run: the plan, in order, with nothing executed.

Dry runs are checked with failing ``docker``/``kind``/``kubectl``/``curl`` first on PATH,
so a dry run that ran anything would fail and leave a trace. The generated
kustomizations are rendered with the real kustomize and validated like the manifests.
The real code path, with fake tools, is in test_kind_script_fakes.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import calls, first_line_with, repo, run_script
from ._support import REPO_ROOT, of_kind

pytestmark = pytest.mark.k8s

Errors = Callable[[dict[str, Any]], list[str]]


def test_dry_run_prints_every_step_in_order_and_runs_nothing(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "all")
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path) == [], "a dry run ran docker, kind, kubectl or curl"
    lines = proc.stdout.splitlines()
    order = [
        "kind create cluster --name kserve-detector",
        "cert-manager/releases/download/v1.17.0/cert-manager.yaml",
        # Finding 1: kserve.yaml carries no Namespace since v0.17.
        "create namespace kserve",
        # Issue 19, finding 1: CRDs Established before the objects that use them.
        "kserve/releases/download/v0.20.0/kserve-crds.yaml",
        "wait --for=condition=Established --timeout=60s crd/inferenceservices.serving.kserve.io",
        "kserve/releases/download/v0.20.0/kserve.yaml",
        # Finding 2: every controller (and its webhook) up before the cluster resources.
        "-n kserve wait --for=condition=Available deployment --all",
        "v0.20.0/kserve-cluster-resources.yaml",
        "docker build --target runtime -t kserve-detector:0.1.0",
        "docker build --target web -t kserve-detector-web:0.1.0",
        # Finding 6: a single-platform archive, not `kind load docker-image`.
        "docker image save --platform PLATFORM -o",
        "kind load image-archive",
        "create namespace kserve-detector",
        "apply -k",
        "wait --for=condition=Ready inferenceservice/detector",
        "kind-e2e-app",
        "rollout status deployment/detector-web",
        "port-forward --address 127.0.0.1 svc/detector-predictor 18080:SERVICE_PORT_http1",
        # Finding 5: gRPC through the Service's h2c port in Standard mode.
        "port-forward --address 127.0.0.1 svc/detector-predictor 18081:SERVICE_PORT_h2c",
        "E2E_BASE_URL=http://127.0.0.1:18080",
        "port-forward --address 127.0.0.1 svc/detector-web 18000:80",
        "web-healthz.json http://127.0.0.1:18000/healthz",
        "web-detect.json http://127.0.0.1:18000/api/detect",
        "check-web-answer.py",
    ]
    positions = [first_line_with(lines, step) for step in order]
    assert positions == sorted(positions), "steps out of order:\n" + proc.stdout
    test_line = lines[first_line_with(lines, "E2E_BASE_URL=")]
    assert "E2E_MODEL_NAME=detector" in test_line
    assert "E2E_GRPC_TARGET=127.0.0.1:18081" in test_line
    assert test_line.rstrip().endswith("tests/e2e")
    assert str(repo(tmp_path) / ".venv" / "bin" / "pytest") in test_line
    assert "kind load docker-image" not in proc.stdout


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
    web = "registry.example.com:5000/team/web:4.5.6"
    proc = run_script(tmp_path, "--dry-run", "all", CLUSTER_NAME="ci-7", NAMESPACE="ns-x",
                      IMAGE=image, WEB_IMAGE=web, LOCAL_PORT="19999", LOCAL_WEB_PORT="19000",
                      WAIT_TIMEOUT="42s")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "kind create cluster --name ci-7" in out
    assert f"docker build --target runtime -t {image}" in out
    assert f"docker build --target web -t {web}" in out
    assert f"{image}\n+ kind load image-archive" in out
    assert "--name ci-7" in out
    assert "newName: registry.example.com:5000/team/detector" in out
    assert 'newTag: "1.2.3"' in out
    assert "newName: registry.example.com:5000/team/web" in out
    assert 'newTag: "4.5.6"' in out
    assert "namespace: ns-x" in out
    assert "-n ns-x wait --for=condition=Ready inferenceservice/detector --timeout=42s" in out
    assert "-n ns-x rollout status deployment/detector-web --timeout=42s" in out
    assert "E2E_BASE_URL=http://127.0.0.1:19999" in out
    assert "http://127.0.0.1:19000/api/detect" in out
    assert "kind-kserve-detector" not in out


def test_web_0_leaves_the_web_app_out(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "all", WEB="0")
    assert proc.returncode == 0, proc.stderr
    assert "docker build --target runtime" in proc.stdout
    for absent in ("--target web", "kserve-detector-web", "detector-web", "/api/detect"):
        assert absent not in proc.stdout, absent


def _generated(stdout: str, directory: str) -> str:
    lines = stdout.splitlines()
    start = first_line_with(lines, f"+ write {directory}")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("+ "))
    return "\n".join(lines[start + 1:end]) + "\n"


def _render_generated(tmp_path: Path, render: Any, name: str, content: str) -> list[Any]:
    # Where the script writes it: <root>/out/<name>, next to manifests/.
    folder = repo(tmp_path) / "out" / name
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(content)
    return render(folder)  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay",
                         ["kind", "kind-knative", "kind-runtime", "kind-keda", "kind-grpc"])
def test_generated_deploy_kustomization_renders_what_the_script_tests(
        tmp_path: Path, overlay: str, render: Any, api_errors: Errors) -> None:
    image = "registry.example.com/team/detector:1.2.3"
    knative = "1" if "knative" in overlay else "0"
    proc = run_script(tmp_path, "--dry-run", "deploy", IMAGE=image, NAMESPACE="ns-x",
                      KNATIVE=knative, OVERLAY=overlay)
    assert proc.returncode == 0, proc.stderr
    generated = _generated(proc.stdout, str(repo(tmp_path) / "out/kind-e2e-deploy"))
    objects = _render_generated(tmp_path, render, "kind-e2e-deploy", generated)
    expected = render(REPO_ROOT / "manifests" / "overlays" / overlay)
    assert sorted(o["kind"] for o in objects) == sorted(o["kind"] for o in expected)
    for obj in objects:
        assert api_errors(obj) == []
        assert obj["metadata"]["namespace"] == "ns-x"
    (isvc,) = of_kind(objects, "InferenceService")
    (original,) = of_kind(expected, "InferenceService")
    assert isvc["metadata"]["name"] == "detector"
    predictor = isvc["spec"]["predictor"]
    # The image id rolls the pods; the overlay's own annotations survive the patch.
    assert predictor["annotations"] == {**original["spec"]["predictor"].get("annotations", {}),
                                        "kserve-detector/image-id": "IMAGE_ID"}
    images = [c["image"] for c in predictor.get("containers", [])]
    images += [c["image"] for rt in of_kind(objects, "ServingRuntime")
               for c in rt["spec"]["containers"]]
    assert images == [image]
    wanted_mode = "Knative" if knative == "1" else "Standard"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == wanted_mode


def test_generated_app_kustomization_runs_the_loaded_web_image(
        tmp_path: Path, render: Any, api_errors: Errors) -> None:
    web = "registry.example.com/team/web:4.5.6"
    proc = run_script(tmp_path, "--dry-run", "deploy", WEB_IMAGE=web, NAMESPACE="ns-x")
    assert proc.returncode == 0, proc.stderr
    generated = _generated(proc.stdout, str(repo(tmp_path) / "out/kind-e2e-app"))
    objects = _render_generated(tmp_path, render, "kind-e2e-app", generated)
    assert sorted(o["kind"] for o in objects) == ["Deployment", "Service"]
    for obj in objects:
        assert api_errors(obj) == []
        assert obj["metadata"]["namespace"] == "ns-x"
    (deployment,) = of_kind(objects, "Deployment")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"] == web
    assert container["imagePullPolicy"] == "Never", "the image exists only on the kind node"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz", "patch kept the rest"
    assert template["metadata"]["annotations"]["kserve-detector/image-id"] == "IMAGE_ID"


def test_knative_flag_installs_knative_before_kserve(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up", KNATIVE="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    crds = first_line_with(lines, "serving/releases/download/knative-v1.21.1/serving-crds")
    established = first_line_with(lines, "crd -l knative.dev/crd-install=true")
    knative = first_line_with(lines, "serving/releases/download/knative-v1.21.1/serving-core")
    kourier = first_line_with(lines, "net-kourier")
    # Issue 19, finding 2: the webhook serves before its ConfigMaps are patched.
    webhook = first_line_with(lines, "-n knative-serving wait --for=condition=Available")
    patch = first_line_with(lines, "patch configmap/config-network")
    kserve = first_line_with(lines, "kserve/releases/download/v0.20.0/kserve.yaml")
    assert crds < established < knative < kourier < webhook < patch < kserve
    assert '\\"defaultDeploymentMode\\":\\"Knative\\"' in proc.stdout
    deploy = run_script(tmp_path, "--dry-run", "deploy", KNATIVE="1")
    assert "manifests/overlays/kind-knative" in deploy.stdout
    # A Knative revision serves one port: REST and gRPC are reached on the pod.
    e2e = run_script(tmp_path, "--dry-run", "e2e", KNATIVE="1")
    assert "pod/POD 18080:8080" in e2e.stdout
    assert "pod/POD 18081:8081" in e2e.stdout


def go_containerregistry_registry(ref: str) -> str:
    """The registry go-containerregistry's pkg/name parses from a reference."""
    first, sep, _ = ref.partition("/")
    registry = first if sep and ("." in first or ":" in first) else "index.docker.io"
    return "index.docker.io" if registry == "docker.io" else registry


@pytest.mark.parametrize(("image", "registry"), [
    ("kserve-detector:0.1.0", "index.docker.io"),
    ("team/kserve-detector:0.1.0", "index.docker.io"),
    ("docker.io/library/kserve-detector:0.1.0", "index.docker.io"),
    ("localhost/kserve-detector:0.1.0", "index.docker.io"),
    ("localhost:5001/kserve-detector:0.1.0", "localhost:5001"),
    ("kind.local/kserve-detector:0.1.0", "kind.local"),
    ("registry.example.com/ml/kserve-detector:0.1.0", "registry.example.com"),
])
def test_knative_skips_tag_resolution_for_the_loaded_image(
        tmp_path: Path, image: str, registry: str) -> None:
    # Finding 3: Knative matches the parsed registry; "docker.io" never matches.
    assert go_containerregistry_registry(image) == registry
    proc = run_script(tmp_path, "--dry-run", "up", KNATIVE="1", IMAGE=image)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r'"registries-skipping-tag-resolving":"([^"]+)"', proc.stdout)
    assert match, proc.stdout
    skipped = match.group(1).split(",")
    assert registry in skipped
    assert "index.docker.io" in skipped
    assert "docker.io" not in skipped, "a registry name Knative never sees"


def test_standard_mode_is_the_default(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "up")
    assert '\\"defaultDeploymentMode\\":\\"Standard\\"' in proc.stdout
    assert "knative" not in proc.stdout.lower()


def test_skip_build_loads_the_existing_images(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", SKIP_BUILD="1")
    assert proc.returncode == 0, proc.stderr
    assert "docker build" not in proc.stdout
    assert "-o " in proc.stdout
    assert proc.stdout.count("kind load image-archive") == 2


def test_the_predictor_stage_the_script_builds_exists() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE)
    assert "runtime" in stages, f"Dockerfile stages: {stages}"


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


@pytest.mark.parametrize("variable", ["IMAGE", "WEB_IMAGE"])
def test_untagged_image_is_refused(tmp_path: Path, variable: str) -> None:
    setting: Any = {variable: "registry:5000/kserve-x"}
    proc = run_script(tmp_path, "--dry-run", "deploy", **setting)
    assert proc.returncode != 0
    assert "must carry a tag" in proc.stderr


def test_unknown_overlay_is_refused(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY="prod")
    assert proc.returncode != 0
    assert "manifests/overlays/prod" in proc.stderr
