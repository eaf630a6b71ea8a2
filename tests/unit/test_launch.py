"""launch: the local server processes of the benchmark and the tests start, fail and stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import launch


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(launch.ServerFailed, match="No module named"):
        launch.start("no_such_module_for_bench", [], tmp_path, timeout=30)


def test_stop_asks_with_sigterm_first() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert launch.stop(proc, timeout=10) == -15  # SIGTERM ended it; no SIGKILL needed


def test_stop_kills_a_process_that_ignores_sigterm() -> None:
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    assert launch.stop(proc, timeout=0.5) == -9
    proc.stdout.close()
