"""The client stays light: no torch, torchvision, kserve or predictor, ever.

The slow test builds a clean virtualenv with only the client's dependencies, installs the
project there, and runs the CLI: what a user gets from ``pip install kserve-detector``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "torchvision", "kserve", "predictor")
CLIENT_DEPS = ("httpx", "grpcio", "protobuf", "numpy", "pillow", "tqdm")


def test_importing_the_client_loads_no_server_module() -> None:
    code = (
        "import sys, client, client.cli, client.draw, client._grpc, client.web.app\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert done.stdout.strip() == ""


def test_rest_users_do_not_load_grpc() -> None:
    code = ("import sys, client\n"
            "client.DetectionClient(protocol='v2').close()\n"
            "print('grpc' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_client_works_in_a_clean_venv_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    try:
        venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    except Exception as exc:  # no ensurepip, read-only disk...
        pytest.skip(f"cannot create a virtualenv here ({exc}); run where `python -m venv` works")
    python = env_dir / "bin" / "python"

    # Install from a copy holding only the client, so nothing is built inside the repo.
    source = tmp_path / "src"
    shutil.copytree(REPO / "client", source / "client",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", source)
    readme = REPO / "README.md"
    (source / "README.md").write_text(
        readme.read_text(encoding="utf-8") if readme.exists() else "client\n")

    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in ([*CLIENT_DEPS], ["--no-deps", str(source)]):
        done = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"pip could not install {' '.join(args)}: {done.stderr[-500:]}")

    # Run from an empty folder so that only the installed package can be imported.
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    check = (
        "import importlib.util, sys, client, client._grpc\n"
        f"absent = [m for m in {HEAVY!r} if importlib.util.find_spec(m) is None]\n"
        "print(client.__file__)\n"
        "print(','.join(absent))\n"
    )
    done = subprocess.run([str(python), "-c", check], capture_output=True, text=True,
                          cwd=work, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    location, absent = done.stdout.split()
    assert str(env_dir) in location
    assert absent.split(",") == list(HEAVY)

    # The web backend needs its extra; without it, one line says which command installs it.
    done = subprocess.run([str(python), "-m", "client.web"], capture_output=True, text=True,
                          cwd=work, env=env, timeout=120)
    assert done.returncode == 2
    assert "pip install 'kserve-detector[web]'" in done.stderr

    script = env_dir / "bin" / "detect-client"
    for command in ([str(script), "--help"], [str(python), "-m", "client", "detect", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "exit status:" in done.stdout
