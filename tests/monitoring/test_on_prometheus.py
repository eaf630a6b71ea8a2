"""The dashboard and the autoscaling signal, answered by a real Prometheus scraping the
real server under a load this module drives.

One server (``python -m predictor`` with the demo detector and the keda overlay's own
arguments) and one Prometheus serve the whole module; the load runs from the fixture's
start to its end (about 15 s):

- every query of the shipped Grafana dashboard returns data;
- the exact query of the keda overlay's ScaledObject (read from the rendered manifest)
  answers the queue the load makes, and KEDA + the HPA turn it into the replica count
  the load calls for;
- the standard-hpa overlay's CPU target, applied to the server's CPU under that load
  as Prometheus reads it, gives the replica count the HPA formula gives for the CPU the
  kernel accounted to the process;
- the kind cluster's Prometheus (manifests/monitoring/kind-prometheus) keeps the
  annotated predictor pod, labels it as the kind-keda query expects, and drops the rest.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import DEMO_MODEL_DIR, Server, start_server

from . import _autoscalers as autoscalers
from ._load import Load, wait_until
from ._prometheus import (
    MONITORING,
    NAMESPACE,
    POD,
    Prometheus,
    finite,
    need,
    of_kind,
    render,
    rule_groups,
    run_prometheus,
    sample_value,
    start_prometheus,
)

pytestmark = [pytest.mark.monitoring, pytest.mark.integration]

OVERLAYS = MONITORING.parent / "overlays"
# Requests always in flight. With one inference worker running batches of B images,
# the model holds one batch and the other CLIENTS - B requests wait in the queue
# (fewer for a moment while the batch just answered travels back and is re-sent).
CLIENTS = 36
# The pod's CPU limit decides the worker count in a cluster; one here keeps the
# arithmetic above exact on any machine.
WORKERS = 1
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval);
# a 3-hour panel is about 10 s per point.
RATE_INTERVAL = "10s"
SERVER_FLAGS_SET_HERE = {"model_name", "http_port", "grpc_port", "model_dir"}
# A PodMonitor's job and the prometheus.io annotation job, both scraping the same pod.
TWO_JOBS = ("podmonitor", "kubernetes-pods")


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].partition("=")[::2] for a in args)


def _isvc(overlay: str) -> dict[str, Any]:
    return of_kind(render(OVERLAYS / overlay), "InferenceService")


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from the kernel (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    server: Server
    prom: Prometheus
    load: Load
    keda: dict[str, Any]
    batch: int
    steady_at: float
    cpu_at_steady: float
    # The same server scraped by two jobs, as a cluster running both the keda overlay's
    # prometheus.io annotations and manifests/monitoring's PodMonitor does.
    both: Prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    need("prometheus")
    keda = _isvc("keda")
    container = keda["spec"]["predictor"]["containers"][0]
    args = [a for a in container["args"]
            if a[2:].partition("=")[0] not in SERVER_FLAGS_SET_HERE]
    batch = int(_flags(container["args"])["max_batch_size"])
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = workdir / "rules.yaml"
    import yaml

    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    server = start_server(workdir / "logs", DEMO_MODEL_DIR, *args,
                          "--inference_workers", str(WORKERS))
    prom: Prometheus | None = None
    both: Prometheus | None = None
    load: Load | None = None
    try:
        prom = start_prometheus(workdir, f"127.0.0.1:{server.http_port}", rules)
        assert prom.scraped("detector_model_info"), prom.log_path.read_text(
            encoding="utf-8")[-2000:]
        both = start_prometheus(workdir / "two-jobs", f"127.0.0.1:{server.http_port}",
                                jobs=TWO_JOBS)
        assert both.scraped("detector_model_info"), both.log_path.read_text(
            encoding="utf-8")[-2000:]
        load = Load(server.http_url, server.model_name, CLIENTS).start()
        steady = CLIENTS - 2 * batch

        def steady_load() -> bool:
            # The queue holds what the load keeps in flight, and the counters have
            # two scrapes or more inside a rate window (scrapes can be slow on a busy
            # machine: a rate over fewer answers nothing).
            assert prom is not None
            depth = prom.query("detector_queue_depth")
            rates = [prom.query(f"rate({name}[{RATE_INTERVAL}])")
                     for name in ("detector_images_total", "detector_rejected_requests_total")]
            return (bool(depth) and sample_value(depth[0]) >= steady
                    and all(r and sample_value(r[0]) > 0 for r in rates))

        assert wait_until(steady_load, 60), (
            f"no steady load: the queue never held {steady} images, or no counter moved")
        yield Stack(server, prom, load, keda, batch, time.time(),
                    _process_cpu_seconds(server.proc.pid), both)
    finally:
        if load is not None:
            stats = load.stop()
            assert not stats.errors, stats.errors[:3]
        if prom is not None:
            prom.stop()
        if both is not None:
            both.stop()
        server.stop()


# --- the dashboard ---------------------------------------------------------------------

def _dashboard() -> dict[str, Any]:
    config_map = of_kind(render(MONITORING), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard: dict[str, Any] = json.loads(config_map["data"]["dashboard.json"])
    return dashboard


def test_dashboard_shows_what_an_operator_watches() -> None:
    titles = " | ".join(p["title"].lower() for p in _dashboard()["panels"])
    for topic in ("images per second", "batch size", "queue depth", "queue wait", "latency",
                  "refusals by reason", "model version", "replicas"):
        assert topic in titles, f"no panel for {topic}: {titles}"


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # Grafana fills $namespace and $model from label_values(...) queries: ask Prometheus.
    chosen: dict[str, str] = {}
    for name in ("namespace", "model"):
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["definition"])
        assert match, variables[name]["definition"]
        selector = match.group(1)
        for key, value in chosen.items():
            selector = selector.replace(f"${key}", value)
        found = stack.prom.label_values(match.group(2), selector)
        assert found, f"variable ${name} finds no value"
        chosen[name] = found[0]
    assert chosen == {"namespace": NAMESPACE, "model": stack.server.model_name}
    empty: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            for key, value in chosen.items():
                expr = expr.replace(f"${key}", value)
            assert "$" not in expr, f"unfilled variable in {expr}"
            result = stack.prom.query(expr)
            values = [sample_value(s) for s in result]
            if not result or not finite(values):
                empty.append(f"{panel['title']}: {target['expr']} -> {values}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_alert_rules_load_into_prometheus(stack: Stack) -> None:
    import httpx

    groups = httpx.get(f"{stack.prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    shipped = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert loaded == shipped
    assert all(r.get("health") in {"ok", "unknown"} for g in groups for r in g["rules"])


# --- the autoscaling signal ------------------------------------------------------------

def test_keda_query_answers_the_queue_the_load_makes(stack: Stack) -> None:
    trigger = autoscalers.keda_trigger(stack.keda)
    assert trigger.type == "prometheus"
    predictor = stack.keda["spec"]["predictor"]
    low, high = predictor["minReplicas"], predictor["maxReplicas"]
    # What the load calls for: one batch in the model, the rest waiting, 16 a replica.
    waiting = CLIENTS - stack.batch
    wanted = math.ceil(waiting / trigger.threshold)
    assert wanted == math.ceil((CLIENTS - 2 * stack.batch) / trigger.threshold) > low, (
        "test constants: the expected queue must map to one replica count, above the minimum")
    for _ in range(3):
        # The exact query, sent the way KEDA sends it (an instant query, now).
        result = stack.prom.query(trigger.query)
        assert len(result) == 1, (
            f"{trigger.query!r} answers {len(result)} series; KEDA needs one (an empty "
            "answer is read as 0 and never scales out)")
        assert result[0]["metric"].get("pod") is None, "the query must sum over pods"
        value = autoscalers.keda_metric(result)
        assert CLIENTS - 2 * stack.batch <= value <= waiting, (
            f"queue {value}, expected {CLIENTS - 2 * stack.batch}..{waiting} for {CLIENTS} "
            f"requests in flight and batches of {stack.batch}")
        desired = autoscalers.hpa_external_average_value(1, value, trigger.threshold)
        assert autoscalers.bounded(desired, 1, low, high) == wanted
        time.sleep(1.5)


def _one_job(expr: str, metric: str, job: str) -> str:
    """``expr`` with the series of ``metric`` restricted to one scrape job."""
    return expr.replace(f"{metric}{{", f'{metric}{{job="{job}", ')


def test_a_pod_scraped_by_two_jobs_counts_once_for_keda_and_the_dashboard(
        stack: Stack) -> None:
    # The keda overlay annotates the pods for prometheus.io scraping and docs recommend
    # manifests/monitoring's PodMonitor: a Prometheus running both holds every series
    # twice. A plain sum doubled the queue (KEDA asked for twice the replicas) and the
    # dashboard counted two replicas for one pod.
    prom = stack.both
    assert sorted(prom.label_values("job", "detector_model_info")) == sorted(TWO_JOBS)
    query = autoscalers.keda_trigger(stack.keda).query
    deadline = time.time() + 20
    while True:
        at = time.time()
        answer = autoscalers.keda_metric(prom.query(query, at))
        per_job = [autoscalers.keda_metric(
            prom.query(_one_job(query, "detector_queue_depth", job), at)) for job in TWO_JOBS]
        if min(per_job) > 0 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert min(per_job) > 0, f"no queue under load: {per_job}"
    # One pod: its queue once (whichever job's sample), never the two added up.
    assert answer == max(per_job), f"query {query} answers {answer}, per job {per_job}"
    assert answer < sum(per_job)
    panels = {p["title"]: p for p in _dashboard()["panels"]}
    chosen = {"namespace": NAMESPACE, "model": stack.server.model_name,
              "__rate_interval": RATE_INTERVAL}

    def ask(title: str) -> list[dict[str, Any]]:
        expr = panels[title]["targets"][0]["expr"]
        for key in sorted(chosen, key=len, reverse=True):
            expr = expr.replace(f"${key}", chosen[key])
        return prom.query(expr)

    (replicas,) = ask("Replicas")
    assert sample_value(replicas) == 1
    (versions,) = ask("Model version")
    assert sample_value(versions) == 1
    assert len(ask("Queue depth")) == 1, "one line per pod"


def test_keda_query_matches_the_pods_kserve_names(stack: Stack) -> None:
    # The label the query filters on carries KServe's Standard-mode pod names
    # (<isvc>-predictor-<replicaset hash>-<suffix>), not the web app's.
    query = autoscalers.keda_trigger(stack.keda).query
    match = re.search(r'pod=~"([^"]+)"', query)
    assert match, query
    assert re.fullmatch(match.group(1), POD)
    assert not re.fullmatch(match.group(1), "detector-web-7d9f8b6c5d-x2x4q")


def test_hpa_overlay_turns_the_cpu_under_load_into_replicas(stack: Stack) -> None:
    hpa = _isvc("standard-hpa")["spec"]["predictor"]
    assert hpa["scaleMetric"] == "cpu"
    # KServe v0.20.0 makes a Utilization target for cpu whatever scaleMetricType says
    # (hpa_reconciler.go, getHPAMetrics), and never reads that field: the overlay sets none.
    assert "scaleMetricType" not in hpa
    request = hpa["containers"][0]["resources"]["requests"]["cpu"]
    request_cores = float(request[:-1]) / 1000 if request.endswith("m") else float(request)
    target = float(hpa["scaleTarget"])
    # The HPA reads container CPU from metrics-server; for a one-process container
    # that is the process's CPU, which the server exports as process_cpu_seconds_total.
    elapsed = time.time() - stack.steady_at
    if elapsed < 6:
        time.sleep(6 - elapsed)
    now = time.time()
    kernel = (_process_cpu_seconds(stack.server.proc.pid) - stack.cpu_at_steady) / (
        now - stack.steady_at)
    window = max(4, int(now - stack.steady_at))
    result = stack.prom.query(
        f'sum(rate(process_cpu_seconds_total{{pod=~"detector-predictor-.*"}}[{window}s]))', now)
    assert len(result) == 1
    scraped = sample_value(result[0])
    assert scraped > 0.2, f"the server used {scraped:.2f} cores under load"
    assert abs(scraped - kernel) <= 0.25 * kernel, (
        f"Prometheus reads {scraped:.2f} cores, the kernel accounted {kernel:.2f}")
    by_prometheus = autoscalers.hpa_cpu_utilization(1, scraped, request_cores, target)
    by_kernel = autoscalers.hpa_cpu_utilization(1, kernel, request_cores, target)
    if by_prometheus != by_kernel:
        # Only where the two readings straddle a step of the formula.
        per_pod = request_cores * target / 100
        steps = [per_pod * n for n in range(1, 10)]
        steps += [per_pod * (1 - autoscalers.TOLERANCE), per_pod * (1 + autoscalers.TOLERANCE)]
        assert any(min(scraped, kernel) <= s <= max(scraped, kernel) for s in steps), (
            by_prometheus, by_kernel)
    low, high = hpa["minReplicas"], hpa["maxReplicas"]
    assert low <= autoscalers.bounded(by_prometheus, 1, low, high) <= high


# --- the Prometheus KEDA reads on kind -------------------------------------------------

def test_kind_prometheus_scrapes_annotated_pods_the_way_the_keda_query_reads_them(
        stack: Stack, tmp_path: Path) -> None:
    # Its scrape job, with Kubernetes pod discovery replaced by two static "pods"
    # carrying the metadata discovery would give them (Debian's Prometheus is built
    # without Kubernetes discovery): the relabelling itself runs unchanged.
    import httpx
    import yaml

    objects = render(MONITORING / "kind-prometheus")
    config = yaml.safe_load(of_kind(objects, "ConfigMap")["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    meta = "__meta_kubernetes_pod_annotation_prometheus_io_"
    pod = {"__meta_kubernetes_namespace": NAMESPACE, "__meta_kubernetes_pod_name": POD,
           f"{meta}scrape": "true", f"{meta}port": str(stack.server.http_port),
           f"{meta}path": "/metrics"}
    web = {"__meta_kubernetes_namespace": NAMESPACE,
           "__meta_kubernetes_pod_name": "detector-web-5c7d8f9b6-abcde"}
    job["static_configs"] = [{"targets": ["127.0.0.1:8080"], "labels": pod},
                             {"targets": ["127.0.0.1:8000"], "labels": web}]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    kind_prom = run_prometheus(tmp_path / "kind-prometheus", config)
    try:
        assert kind_prom.scraped("detector_queue_depth"), "the annotated pod is not scraped"
        targets = httpx.get(f"{kind_prom.url}/api/v1/targets", timeout=10).json()["data"]
        (active,) = targets["activeTargets"]
        assert active["labels"]["pod"] == POD
        assert active["labels"]["namespace"] == NAMESPACE
        assert active["scrapeUrl"] == f"http://127.0.0.1:{stack.server.http_port}/metrics"
        assert len(targets["droppedTargets"]) == 1, "the pod without prometheus.io/scrape"
        trigger = autoscalers.keda_trigger(_isvc("kind-keda"))
        assert trigger.server_address.startswith("http://prometheus.monitoring.svc")
        assert len(kind_prom.query(trigger.query)) == 1
    finally:
        kind_prom.stop()

