"""A real Prometheus (Debian's ``prometheus`` package) for the tests, and the shipped
monitoring manifests rendered with the real kustomize.

The Prometheus runs on 127.0.0.1 with a free port and a temporary tsdb, scrapes the
test's server every second, and is stopped by its PID. In a cluster the PodMonitor
(manifests/monitoring/podmonitor.yaml) or the keda overlay's pod annotations make
Prometheus add ``namespace`` and ``pod`` labels to every series; here the scrape
config adds the same two labels, with a pod name of the form KServe's Standard-mode
Deployment gives its pods (``<isvc>-predictor-<replicaset hash>-<suffix>``).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import launch

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
NAMESPACE = "ml"
POD = "detector-predictor-7d9f8b6c5d-x2x4q"
SCRAPE_INTERVAL_S = 1


def need(tool: str) -> str:
    """The tool's path; skips the test, saying how to install it, when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install -y prometheus); "
                    "the alert, dashboard and autoscaling checks need a real Prometheus")
    return path


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization renders to, with the real kustomize in kubectl."""
    import yaml

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH: cannot render the manifests")
    proc = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single rendered object of a kind."""
    found = [o for o in objects if o.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups, as a plain Prometheus rule file holds them."""
    groups: list[dict[str, Any]] = of_kind(render(MONITORING), "PrometheusRule")["spec"]["groups"]
    return groups


@dataclass
class Prometheus:
    """A running Prometheus server."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (``at``: unix time, default now)."""
        import httpx

        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200, (expr, r.text)
        assert body["status"] == "success", (expr, r.text)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series ``match`` selects (Grafana's label_values)."""
        import httpx

        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match},
                      timeout=10)
        assert r.status_code == 200, r.text
        values: list[str] = r.json()["data"]
        return values

    def scraped(self, metric: str, timeout: float = 30) -> bool:
        """Waits until ``metric`` has a sample."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(metric):
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        launch.stop(self.proc, 20)


def start_prometheus(workdir: Path, target: str, rule_file: Path | None = None,
                     jobs: tuple[str, ...] = ("detector",)) -> Prometheus:
    """Prometheus on a free 127.0.0.1 port scraping ``target`` (host:port) every second,
    once per job in ``jobs`` (two: a cluster running both a PodMonitor and the
    prometheus.io annotation job, each series held twice with a different ``job``)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{
            "job_name": job,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [target],
                                "labels": {"namespace": NAMESPACE, "pod": POD}}],
        } for job in jobs],
    }
    if rule_file is not None:
        config["rule_files"] = [str(rule_file)]
    return run_prometheus(workdir, config)


def run_prometheus(workdir: Path, config: dict[str, Any]) -> Prometheus:
    """Prometheus with this configuration on a free 127.0.0.1 port, once it is ready."""
    import yaml

    from launch import ServerFailed, wait_ready
    from tests.support.servers import free_port

    binary = need("prometheus")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(proc, f"{prom.url}/-/ready", 60, "prometheus",
                   lambda: log_path.read_text(errors="replace")[-2000:])
    except ServerFailed:
        prom.stop()
        raise
    return prom


def sample_value(sample: dict[str, Any]) -> float:
    """The number in one instant-vector sample."""
    return float(sample["value"][1])


def finite(values: list[float]) -> bool:
    """True when every value is a real number (no NaN, no infinity)."""
    return all(math.isfinite(v) for v in values)
