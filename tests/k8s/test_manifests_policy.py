"""Policy checks on rendered InferenceServices: what makes a pod that KServe accepts
still fail in a cluster (probes on the wrong path, ports the server does not open,
a CPU pod told to use CUDA, an image that cannot be pulled, autoscaling that never
scales).

Every check runs on the container KServe will actually run (``_kserve.py``): the
custom ``kserve-container``, or the serving runtime's container with the
InferenceService's ``model`` merged over it.
"""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from ._kserve import mode, predictor_container, predictor_volumes
from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, REPO_ROOT, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
GPU = "nvidia.com/gpu"


# --- helpers -------------------------------------------------------------------------


def flags(c: dict[str, Any]) -> dict[str, str]:
    """The container's ``--name=value`` arguments (``--flag`` alone maps to "")."""
    out: dict[str, str] = {}
    for arg in c.get("args", []):
        assert arg.startswith("--"), f"argument {arg!r} is not a --flag"
        name, _, value = arg[2:].partition("=")
        out[name] = value
    return out


def cpu_cores(quantity: str | int | float) -> float:
    """Kubernetes CPU quantity in cores ("500m" -> 0.5)."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_BYTES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str | int) -> float:
    """Kubernetes memory quantity in bytes ("2Gi" -> 2147483648)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(quantity))
    assert match, f"unparsable memory quantity {quantity!r}"
    return float(match.group(1)) * _BYTES.get(match.group(2) or "", 1)


def resolve_port(c: dict[str, Any], port: int | str) -> int:
    """A probe's port as a number (named ports looked up in the container)."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in named, f"probe port {port!r} names no container port"
    return int(named[port])


@pytest.fixture
def c(isvc: dict[str, Any], runtimes: list[dict[str, Any]]) -> dict[str, Any]:
    """The predictor container KServe runs for the overlay's InferenceService."""
    return predictor_container(isvc, runtimes)


@pytest.fixture(scope="module")
def all_isvcs(render: Render) -> dict[str, dict[str, Any]]:
    """Every overlay's InferenceService, by overlay name."""
    rendered = {}
    for name in ISVC_OVERLAYS:
        (obj,) = of_kind(render(OVERLAYS_DIR / name), "InferenceService")
        rendered[name] = obj
    return rendered


@pytest.fixture(scope="module")
def containers(render: Render) -> dict[str, dict[str, Any]]:
    """Every overlay's predictor container as KServe will run it, by overlay name."""
    cluster = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    out = {}
    for name in ISVC_OVERLAYS:
        objects = render(OVERLAYS_DIR / name)
        (isvc,) = of_kind(objects, "InferenceService")
        out[name] = predictor_container(isvc, of_kind(objects, "ServingRuntime") + cluster)
    return out


def container(isvc: dict[str, Any]) -> dict[str, Any]:
    """The custom kserve-container of an InferenceService (not for model predictors)."""
    return predictor_container(isvc)


# --- every overlay -------------------------------------------------------------------

def test_image_tag_is_pinned(c: dict[str, Any]) -> None:
    image = c["image"]
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    assert ":" in last, f"image {image} has no tag (means :latest)"
    tag = last.split(":", 1)[1]
    assert tag != "latest"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.-]+)?", tag), (
        f"image tag {tag!r} is not a version")


def test_security_context_is_hardened(isvc: dict[str, Any], c: dict[str, Any],
                                      runtimes: list[dict[str, Any]]) -> None:
    ctx = c.get("securityContext", {})
    pod_ctx = isvc["spec"]["predictor"].get("securityContext", {})
    assert ctx.get("runAsNonRoot") is True
    assert isinstance(ctx.get("runAsUser"), int)
    assert ctx["runAsUser"] > 0
    assert ctx.get("readOnlyRootFilesystem") is True
    assert ctx.get("allowPrivilegeEscalation") is False
    assert "ALL" in ctx.get("capabilities", {}).get("drop", [])
    seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}
    assert seccomp.get("type") == "RuntimeDefault"
    # A read-only root needs somewhere writable for temp files and caches.
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    assert "/tmp" in mounts, "no volume mounted at /tmp"
    volumes = {v["name"]: v for v in predictor_volumes(isvc, runtimes)}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_hit_the_servers_real_endpoints(c: dict[str, Any]) -> None:
    args = flags(c)
    model, http_port = args["model_name"], int(args["http_port"])
    expected = {
        "readinessProbe": {f"/v2/models/{model}/ready"},
        "livenessProbe": {"/v2/health/live"},
        "startupProbe": {"/v2/health/live", f"/v2/models/{model}/ready"},
    }
    for kind, paths in expected.items():
        probe = c.get(kind)
        assert probe is not None, f"{kind} missing (KServe's default is a bare TCP check)"
        http = probe.get("httpGet")
        assert http is not None, f"{kind} is not an HTTP probe"
        assert http["path"] in paths, f"{kind} path {http['path']} not in {paths}"
        assert resolve_port(c, http["port"]) == http_port, (
            f"{kind} probes port {http['port']}, the server listens on --http_port={http_port}")


def test_startup_probe_leaves_time_for_model_load(c: dict[str, Any]) -> None:
    probe = c["startupProbe"]
    budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert budget >= 120, f"startup probe gives up after {budget}s; model load can take minutes"


def test_ports_match_server_flags(c: dict[str, Any]) -> None:
    args = flags(c)
    by_name = {"http1": int(args["http_port"]), "h2c": int(args["grpc_port"])}
    ports = c.get("ports", [])
    assert ports, "no container port: KServe would not know where to send requests"
    for port in ports:
        assert port.get("name") in by_name, (
            f"port name {port.get('name')!r}: KServe/Knative know http1 (REST) and h2c (gRPC)")
        wanted = by_name[port["name"]]
        assert port["containerPort"] == wanted, (
            f"port {port['name']} is {port['containerPort']}, the server uses {wanted}")


def test_deployment_mode_is_a_current_kserve_name(isvc: dict[str, Any]) -> None:
    assert mode(isvc) in {"Standard", "Knative"}


def test_recommended_labels(isvc: dict[str, Any]) -> None:
    labels = isvc["metadata"].get("labels", {})
    for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
        assert labels.get(f"app.kubernetes.io/{key}"), f"label app.kubernetes.io/{key} missing"


def test_requests_fit_within_limits(c: dict[str, Any]) -> None:
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert cpu_cores(requests["cpu"]) <= cpu_cores(limits["cpu"])
    assert memory_bytes(requests["memory"]) <= memory_bytes(limits["memory"])
    # The server sizes its workers and torch threads from the CPU quota (the limit), so
    # no thread count is written in the manifests that could disagree with the limit.
    env = {e["name"] for e in c.get("env", [])}
    assert not env & {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}, (
        "a thread count in the manifest overrides the server's own plan from the CPU limit")


def test_gpu_only_where_the_server_is_told_cuda(c: dict[str, Any]) -> None:
    args = flags(c)
    has_gpu = int(c["resources"].get("limits", {}).get(GPU, 0)) >= 1
    assert (args.get("device") == "cuda") == has_gpu, (
        "--device=cuda needs a GPU limit, and a GPU limit is wasted without --device=cuda")
    if "fp16" in args:
        assert has_gpu, "--fp16 is a CUDA-only option"


def test_autoscaling_is_consistent(isvc: dict[str, Any], c: dict[str, Any]) -> None:
    predictor = isvc["spec"]["predictor"]
    annotations = isvc["metadata"].get("annotations", {})
    metric = predictor.get("scaleMetric")
    if metric in {"concurrency", "rps"}:
        assert mode(isvc) == "Knative", f"scaleMetric {metric} works only in Knative mode"
    if metric in {"cpu", "memory"}:
        assert mode(isvc) == "Standard", f"scaleMetric {metric} is an HPA metric (Standard mode)"
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas")
    if high is not None:
        assert low <= high, f"minReplicas {low} > maxReplicas {high}"
    if mode(isvc) == "Standard":
        assert low >= 1, "Standard mode cannot scale HTTP traffic up from zero"
    if "scaleTarget" in predictor:
        assert predictor["scaleTarget"] > 0
        hard = predictor.get("containerConcurrency", 0)
        assert hard == 0 or hard >= predictor["scaleTarget"], (
            "containerConcurrency below scaleTarget: the target can never be reached")
    if annotations.get(CLASS_ANNOTATION) == "keda":
        assert mode(isvc) == "Standard", "KEDA autoscaling exists only in Standard mode"
        assert predictor.get("autoScaling", {}).get("metrics"), "autoscalerClass keda, no metrics"
    for m in predictor.get("autoScaling", {}).get("metrics", []):
        if m["type"] == "External":
            # KServe hands target.value (only) to KEDA as the trigger threshold.
            assert m["external"]["target"].get("value") is not None
    if mode(isvc) == "Knative" and low == 0:
        startup = c["startupProbe"]
        cold_start = startup["periodSeconds"] * startup["failureThreshold"]
        assert predictor.get("timeout", 300) >= cold_start, (
            "scale-to-zero: the first request times out before a cold pod can be ready")


def test_args_are_accepted_by_the_server(c: dict[str, Any]) -> None:
    config = pytest.importorskip("predictor.config",
                                 reason="predictor package not importable (install the project)")
    if hasattr(config, "build_parser"):
        parser = config.build_parser()
    else:
        model_server = pytest.importorskip("kserve.model_server", reason="kserve not installed")
        parser = argparse.ArgumentParser(parents=[model_server.parser], add_help=False)
        config.add_arguments(parser)
    args = c["args"]
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            config.from_args(parser.parse_args(args))
    except SystemExit:
        pytest.fail(f"the server refuses {args}: {stderr.getvalue().strip()}")


# --- ports per deployment mode -----------------------------------------------------

def test_ports_per_deployment_mode(isvc: dict[str, Any], c: dict[str, Any]) -> None:
    names = [p.get("name") for p in c.get("ports", [])]
    if mode(isvc) == "Knative":
        # Knative refuses a second port, and moves the liveness probe onto the one
        # it serves: that must be the HTTP port the probes are written for.
        assert names == ["http1"], f"Knative serves exactly one port; got {names}"
    else:
        # Standard: one Service port per container port (KServe's
        # service_reconciler.go); without h2c, gRPC is unreachable through it.
        assert sorted(names) == ["h2c", "http1"], f"Standard mode needs REST and gRPC: {names}"


def test_rest_is_the_inference_service_url_except_in_the_grpc_overlay(
        containers: dict[str, dict[str, Any]]) -> None:
    # The first container port becomes Service port 80, the InferenceService's URL
    # (what the web app and any Ingress call).
    for name, c in containers.items():
        first = c["ports"][0]["name"]
        assert first == ("h2c" if name in {"grpc", "kind-grpc"} else "http1"), (
            f"{name}: first port {first}")


def test_grpc_overlay_is_standard_mode_with_http_probes(
        all_isvcs: dict[str, dict[str, Any]], containers: dict[str, dict[str, Any]]) -> None:
    c = containers["grpc"]
    assert mode(all_isvcs["grpc"]) == "Standard"
    assert c["ports"][0] == {"name": "h2c", "containerPort": int(flags(c)["grpc_port"]),
                             "protocol": "TCP"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert resolve_port(c, c[probe]["httpGet"]["port"]) == int(flags(c)["http_port"])


def test_cluster_local_for_the_mode_in_use(all_isvcs: dict[str, dict[str, Any]]) -> None:
    # Each mode reads its own label (KServe v0.20.0 ingress reconcilers).
    label = {"Standard": "networking.kserve.io/visibility",
             "Knative": "networking.knative.dev/visibility"}
    for name in ("kind", "kind-knative", "kind-runtime"):
        isvc = all_isvcs[name]
        assert isvc["metadata"]["labels"].get(label[mode(isvc)]) == "cluster-local", name


# --- particular overlays -------------------------------------------------------------

def test_knative_overlay_scales_on_concurrency(all_isvcs: dict[str, dict[str, Any]]) -> None:
    predictor = all_isvcs["knative"]["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["minReplicas"] >= 1
    assert predictor["containerConcurrency"] >= predictor["scaleTarget"] > 0
    assert predictor["timeout"] > 0
    assert all_isvcs["knative-scale-to-zero"]["spec"]["predictor"]["minReplicas"] == 0


@pytest.mark.parametrize("name", ["gpu", "model-gpu"])
def test_gpu_overlays_request_and_use_a_gpu(name: str, all_isvcs: dict[str, dict[str, Any]],
                                            containers: dict[str, dict[str, Any]]) -> None:
    predictor, c = all_isvcs[name]["spec"]["predictor"], containers[name]
    assert int(c["resources"]["limits"][GPU]) >= 1
    assert any(t.get("key") == GPU for t in predictor.get("tolerations", []))
    assert predictor.get("nodeSelector"), "no node selector: the pod may wait on a CPU node"
    args = flags(c)
    assert args.get("device") == "cuda"
    assert "fp16" in args
    assert int(args["max_batch_size"]) > int(flags(containers["kind"])["max_batch_size"])
    # The default image carries PyTorch's CPU wheels: on a GPU node it would fail
    # to find CUDA. The overlay must pick the CUDA build.
    assert c["image"].rsplit(":", 1)[-1] == "0.1.0-gpu", f"{c['image']} is not the GPU build"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600


def test_keda_overlay_scales_on_queue_depth(all_isvcs: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs["keda"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations[CLASS_ANNOTATION] == "keda"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["backend"] == "prometheus"


def test_keda_overlay_is_fed_by_the_predictors_own_metrics(
        all_isvcs: dict[str, dict[str, Any]], containers: dict[str, dict[str, Any]]) -> None:
    predictor, c = all_isvcs["keda"]["spec"]["predictor"], containers["keda"]
    pod = {**all_isvcs["keda"]["metadata"]["annotations"], **predictor.get("annotations", {})}
    # KServe copies these onto the pods. Its own enable-prometheus-scraping would
    # set port 9091 (the Knative queue-proxy aggregator) and no scrape flag
    # (pkg/webhook/admission/pod/metrics_aggregate_injector.go): nothing listens
    # there in Standard mode. It must be off, or it overwrites the port below.
    assert pod.get("serving.kserve.io/enable-prometheus-scraping") == "false"
    assert pod.get("prometheus.io/scrape") == "true"
    assert int(pod["prometheus.io/port"]) == int(flags(c)["http_port"])
    assert pod.get("prometheus.io/path") == "/metrics"


def test_keda_query_reads_a_metric_the_server_exports(
        all_isvcs: dict[str, dict[str, Any]]) -> None:
    (metric,) = all_isvcs["keda"]["spec"]["predictor"]["autoScaling"]["metrics"]
    query = metric["external"]["metric"]["query"]
    # Deployed in any namespace (the kind script uses its own): no namespace pin.
    assert "namespace=" not in query, query
    # One series per pod first: a pod scraped by two jobs must count once.
    match = re.fullmatch(r'sum\(max by \(namespace, pod\) \((\w+)\{pod=~"([^"]+)"\}\)\)', query)
    assert match, f"unexpected query shape: {query}"
    name, pod_pattern = match.groups()
    # Standard mode pods: <isvc>-predictor-<replicaset hash>-<suffix>.
    assert re.fullmatch(pod_pattern, "detector-predictor-7d9f8b6c5d-x2x4q")
    assert not re.fullmatch(pod_pattern, "detector-web-7d9f8b6c5d-x2x4q")
    metrics = pytest.importorskip("predictor.metrics", reason="install the project")
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics.Metrics(registry)
    assert f"\n{name} " in generate_latest(registry).decode(), f"the server exports no {name}"


def _script_default(variable: str) -> str:
    text = (REPO_ROOT / "scripts" / "kind-e2e.sh").read_text(encoding="utf-8")
    match = re.search(rf'^{variable}="\$\{{{variable}:-([^}}]+)\}}"', text, re.MULTILINE)
    assert match, f"scripts/kind-e2e.sh sets no default {variable}"
    return match.group(1)


@pytest.mark.parametrize("name", ["kind", "kind-knative", "kind-runtime"])
def test_kind_overlays_run_the_image_the_script_loads(
        name: str, containers: dict[str, dict[str, Any]]) -> None:
    c = containers[name]
    assert c["image"] == _script_default("IMAGE")
    # The image exists only on the kind node: pulling it would fail (or worse,
    # fetch someone else's image of that name).
    assert c["imagePullPolicy"] == "Never"
    assert GPU not in c["resources"]["limits"]


@pytest.mark.parametrize("name", ["kind", "kind-runtime"])
def test_kind_overlay_model_matches_what_the_script_tests(
        name: str, all_isvcs: dict[str, dict[str, Any]],
        containers: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs[name]
    assert isvc["metadata"]["name"] == _script_default("ISVC_NAME")
    assert flags(containers[name])["model_name"] == _script_default("MODEL_NAME")
    assert mode(isvc) == "Standard"


def test_storage_uri_overlay_downloads_into_the_model_dir(
        containers: dict[str, dict[str, Any]]) -> None:
    c = containers["storage-uri"]
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    assert re.match(r"(s3|gs|pvc|https?)://", env["STORAGE_URI"])
    assert flags(c)["model_dir"] == "/mnt/models", "KServe's storage initializer fills /mnt/models"


def test_no_blocked_environment_variables(c: dict[str, Any]) -> None:
    # KServe's webhooks refuse PYTHONPATH in any container (pkg/validation/env_policy.go).
    assert "PYTHONPATH" not in {e["name"] for e in c.get("env", [])}


# --- issue 29, item 8 --------------------------------------------------------------------

def test_no_overlay_sets_a_scale_metric_type_kserve_never_reads(isvc: dict[str, Any]) -> None:
    # KServe v0.20.0 declares scaleMetricType (pkg/apis/serving/v1beta1/component.go) and
    # reads it nowhere: the HPA's target type follows scaleMetric alone (getHPAMetrics in
    # pkg/controller/v1beta1/inferenceservice/reconcilers/hpa/hpa_reconciler.go).
    assert "scaleMetricType" not in isvc["spec"]["predictor"]


def _for_seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_first_gpu_deploy_does_not_page_as_no_replica_ready(
        containers: dict[str, dict[str, Any]], render: Render) -> None:
    # The critical alert waits longer than the slowest start any overlay allows, so a
    # pod still loading its model inside its startup probe's budget never pages.
    budgets = {}
    for name, c in containers.items():
        probe = c["startupProbe"]
        budgets[name] = (probe.get("initialDelaySeconds", 0)
                         + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))
    slowest = max(budgets, key=budgets.__getitem__)
    assert budgets["gpu"] == budgets["model-gpu"] == 600, budgets
    (rule_file,) = of_kind(render(MANIFESTS / "monitoring"), "PrometheusRule")
    (rule,) = [r for g in rule_file["spec"]["groups"] for r in g["rules"]
               if r.get("alert") == "DetectorNoReplicaReady"]
    # A minute on top for scheduling and the image pull.
    assert _for_seconds(rule["for"]) >= budgets[slowest] + 60, (
        f"DetectorNoReplicaReady fires after {rule['for']}, while {slowest} may take "
        f"{budgets[slowest]} s to start")
