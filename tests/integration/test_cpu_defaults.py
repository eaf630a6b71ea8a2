"""The server sizes itself from the CPUs it really has and says so, with no flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launch import free_port
from predictor import cpus
from predictor.config import DEMO_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_the_running_server_logs_the_plan_for_this_machine(served_model: Any) -> None:
    expected = cpus.plan(cpus.detect(), cuda=False, workers=None, threads=None)
    log = served_model.log()
    assert (f"{expected.workers} inference worker(s) x {expected.threads} torch thread(s)"
            in log), log[-3000:]
    assert expected.reason in log
    path = next(line for line in log.splitlines() if "CPU path:" in line)
    assert "OpenVINO" in path
    assert "runs backbone+head (static shape" in path
    assert "resize before normalise" in path
    assert "eager" not in path


def test_operators_see_which_engine_runs_without_reading_logs(served_model: Any) -> None:
    """V2 metadata's platform (REST and gRPC) and the model's info metric name the engine."""
    import httpx

    from client import DetectionClient

    rest = httpx.get(f"{served_model.http_url}/v2/models/detector", timeout=10).json()
    assert rest["platform"].startswith("openvino-"), rest
    with DetectionClient(served_model.http_url, protocol="grpc",
                         grpc_url=served_model.grpc_url) as client:
        assert client.metadata().platform == rest["platform"]
    metrics = httpx.get(f"{served_model.http_url}/metrics", timeout=10).text
    platform = rest["platform"]
    assert f'engine="{platform}"' in metrics, metrics[:2000]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_a_process_pinned_to_one_cpu_runs_one_single_thread_worker() -> None:
    one = {min(os.sched_getaffinity(0))}
    command = [sys.executable, "-m", "predictor", "--model_dir", str(DEMO_MODEL_DIR),
               "--http_port", str(free_port()), "--grpc_port", str(free_port())]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: os.sched_setaffinity(0, one))
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "inference worker(s)" in line:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    plan = next((line for line in seen if "inference worker(s)" in line), "")
    assert "1 inference worker(s) x 1 torch thread(s): 1 CPUs (1 CPUs in the affinity mask" \
        in plan, "".join(seen)[-3000:]
