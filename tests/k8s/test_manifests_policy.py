"""Policy checks on rendered InferenceServices: what makes a pod that KServe accepts
still fail in a cluster (probes on the wrong path, ports the server does not open,
a CPU pod told to use CUDA, an image that cannot be pulled, autoscaling that never
scales).
"""

from __future__ import annotations

import argparse
import io
import math
import re
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from ._support import OVERLAYS, OVERLAYS_DIR, REPO_ROOT

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
GPU = "nvidia.com/gpu"


# --- helpers -------------------------------------------------------------------------

def container(isvc: dict[str, Any]) -> dict[str, Any]:
    """The kserve-container of an InferenceService."""
    containers: list[dict[str, Any]] = isvc["spec"]["predictor"]["containers"]
    return next(c for c in containers if c["name"] == "kserve-container")


def flags(c: dict[str, Any]) -> dict[str, str]:
    """The container's ``--name=value`` arguments (``--flag`` alone maps to "")."""
    out: dict[str, str] = {}
    for arg in c.get("args", []):
        assert arg.startswith("--"), f"argument {arg!r} is not a --flag"
        name, _, value = arg[2:].partition("=")
        out[name] = value
    return out


def mode(isvc: dict[str, Any]) -> str:
    """Deployment mode the InferenceService asks for (KServe's default here: Standard)."""
    return str(isvc["metadata"].get("annotations", {}).get(MODE_ANNOTATION, "Standard"))


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


@pytest.fixture(scope="module")
def all_isvcs(render: Render) -> dict[str, dict[str, Any]]:
    """Every overlay's InferenceService, by overlay name."""
    rendered = {}
    for name in OVERLAYS:
        (obj,) = [o for o in render(OVERLAYS_DIR / name) if o["kind"] == "InferenceService"]
        rendered[name] = obj
    return rendered


# --- every overlay -------------------------------------------------------------------

def test_image_tag_is_pinned(isvc: dict[str, Any]) -> None:
    image = container(isvc)["image"]
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    assert ":" in last, f"image {image} has no tag (means :latest)"
    tag = last.split(":", 1)[1]
    assert tag != "latest"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.-]+)?", tag), (
        f"image tag {tag!r} is not a version")


def test_security_context_is_hardened(isvc: dict[str, Any]) -> None:
    c = container(isvc)
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
    volumes = {v["name"]: v for v in isvc["spec"]["predictor"].get("volumes", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_hit_the_servers_real_endpoints(isvc: dict[str, Any]) -> None:
    c = container(isvc)
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


def test_startup_probe_leaves_time_for_model_load(isvc: dict[str, Any]) -> None:
    probe = container(isvc)["startupProbe"]
    budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert budget >= 120, f"startup probe gives up after {budget}s; model load can take minutes"


def test_ports_match_server_flags(isvc: dict[str, Any]) -> None:
    c = container(isvc)
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


def test_requests_fit_within_limits(isvc: dict[str, Any]) -> None:
    c = container(isvc)
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert cpu_cores(requests["cpu"]) <= cpu_cores(limits["cpu"])
    assert memory_bytes(requests["memory"]) <= memory_bytes(limits["memory"])
    threads = {e["name"]: e.get("value") for e in c.get("env", [])}.get("OMP_NUM_THREADS")
    assert threads is not None, "OMP_NUM_THREADS unset: torch would size its pool by host cores"
    assert int(threads) <= math.ceil(cpu_cores(limits["cpu"])), (
        f"OMP_NUM_THREADS={threads} above the CPU limit {limits['cpu']}: throttling")


def test_gpu_only_where_the_server_is_told_cuda(isvc: dict[str, Any]) -> None:
    c = container(isvc)
    args = flags(c)
    has_gpu = int(c["resources"].get("limits", {}).get(GPU, 0)) >= 1
    assert (args.get("device") == "cuda") == has_gpu, (
        "--device=cuda needs a GPU limit, and a GPU limit is wasted without --device=cuda")
    if "fp16" in args:
        assert has_gpu, "--fp16 is a CUDA-only option"


def test_autoscaling_fields_within_crd_enums(isvc: dict[str, Any],
                                             crd_schema: dict[str, Any]) -> None:
    schema = crd_schema["properties"]["spec"]["properties"]["predictor"]["properties"]
    predictor = isvc["spec"]["predictor"]
    for field in ("scaleMetric", "scaleMetricType"):
        if field in predictor:
            assert predictor[field] in schema[field]["enum"], f"{field}={predictor[field]}"
    metric_schema = schema["autoScaling"]["properties"]["metrics"]["items"]["properties"]
    for metric in predictor.get("autoScaling", {}).get("metrics", []):
        assert metric["type"] in metric_schema["type"]["enum"]
        source = metric_schema[metric["type"][0].lower() + metric["type"][1:]]
        target_type = metric[metric["type"].lower()]["target"].get("type")
        if target_type is not None:
            assert target_type in source["properties"]["target"]["properties"]["type"]["enum"]


def test_autoscaling_is_consistent(isvc: dict[str, Any]) -> None:
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
        startup = container(isvc)["startupProbe"]
        cold_start = startup["periodSeconds"] * startup["failureThreshold"]
        assert predictor.get("timeout", 300) >= cold_start, (
            "scale-to-zero: the first request times out before a cold pod can be ready")


def test_args_are_accepted_by_the_server(isvc: dict[str, Any]) -> None:
    config = pytest.importorskip("predictor.config",
                                 reason="predictor package not importable (install the project)")
    if hasattr(config, "build_parser"):
        parser = config.build_parser()
    else:
        model_server = pytest.importorskip("kserve.model_server", reason="kserve not installed")
        parser = argparse.ArgumentParser(parents=[model_server.parser], add_help=False)
        config.add_arguments(parser)
    args = container(isvc)["args"]
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            config.from_args(parser.parse_args(args))
    except SystemExit:
        pytest.fail(f"the server refuses {args}: {stderr.getvalue().strip()}")


# --- particular overlays -------------------------------------------------------------

def test_knative_mode_exposes_exactly_one_port(all_isvcs: dict[str, dict[str, Any]]) -> None:
    knative = {n: i for n, i in all_isvcs.items() if mode(i) == "Knative"}
    assert knative, "no overlay uses Knative mode"
    for name, isvc in knative.items():
        ports = container(isvc).get("ports", [])
        assert len(ports) == 1, f"{name}: Knative routes exactly one port, got {len(ports)}"


def test_knative_overlay_scales_on_concurrency(all_isvcs: dict[str, dict[str, Any]]) -> None:
    predictor = all_isvcs["knative"]["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["minReplicas"] >= 1
    assert predictor["containerConcurrency"] >= predictor["scaleTarget"] > 0
    assert predictor["timeout"] > 0
    assert all_isvcs["knative-scale-to-zero"]["spec"]["predictor"]["minReplicas"] == 0


def test_gpu_overlay_requests_and_uses_a_gpu(all_isvcs: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs["gpu"]
    predictor, c = isvc["spec"]["predictor"], container(isvc)
    assert int(c["resources"]["limits"][GPU]) >= 1
    assert any(t.get("key") == GPU for t in predictor.get("tolerations", []))
    assert predictor.get("nodeSelector"), "no node selector: the pod may wait on a CPU node"
    args = flags(c)
    assert args.get("device") == "cuda"
    assert "fp16" in args
    # The default image carries PyTorch's CPU wheels: on a GPU node it would fail
    # to find CUDA. The overlay must pick the CUDA build.
    assert "gpu" in c["image"].rsplit(":", 1)[-1], f"{c['image']} is not the GPU build"


def test_grpc_overlay_exposes_h2c_on_the_grpc_port(all_isvcs: dict[str, dict[str, Any]]) -> None:
    c = container(all_isvcs["grpc"])
    assert c["ports"] == [{"name": "h2c", "containerPort": int(flags(c)["grpc_port"]),
                           "protocol": "TCP"}]


def test_keda_overlay_scales_on_queue_depth(all_isvcs: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs["keda"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations[CLASS_ANNOTATION] == "keda"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["backend"] == "prometheus"
    assert "detector_queue_depth" in metric["external"]["metric"]["query"]


def _script_default(variable: str) -> str:
    text = (REPO_ROOT / "scripts" / "kind-e2e.sh").read_text()
    match = re.search(rf'^{variable}="\$\{{{variable}:-([^}}]+)\}}"', text, re.MULTILINE)
    assert match, f"scripts/kind-e2e.sh sets no default {variable}"
    return match.group(1)


@pytest.mark.parametrize("name", ["kind", "kind-knative"])
def test_kind_overlays_run_the_image_the_script_loads(
        name: str, all_isvcs: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs[name]
    c = container(isvc)
    assert c["image"] == _script_default("IMAGE")
    # The image exists only on the kind node: pulling it would fail (or worse,
    # fetch someone else's image of that name).
    assert c["imagePullPolicy"] in {"Never", "IfNotPresent"}
    assert GPU not in c["resources"]["limits"]
    assert isvc["metadata"]["labels"].get("networking.kserve.io/visibility") == "cluster-local"


def test_kind_overlay_model_matches_what_the_script_tests(
        all_isvcs: dict[str, dict[str, Any]]) -> None:
    isvc = all_isvcs["kind"]
    assert isvc["metadata"]["name"] == _script_default("ISVC_NAME")
    assert flags(container(isvc))["model_name"] == _script_default("MODEL_NAME")
    assert mode(isvc) == "Standard"


def test_storage_uri_overlay_downloads_into_the_model_dir(
        all_isvcs: dict[str, dict[str, Any]]) -> None:
    c = container(all_isvcs["storage-uri"])
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    assert re.match(r"(s3|gs|pvc|https?)://", env["STORAGE_URI"])
    assert flags(c)["model_dir"] == "/mnt/models", "KServe's storage initializer fills /mnt/models"
