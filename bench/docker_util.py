"""The few Docker engine calls the start benchmark makes (the ``docker`` command line)."""

from __future__ import annotations

import os
import subprocess


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Runs ``docker ARGS``; its stdout."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def exists(image: str) -> bool:
    """Whether the engine has ``image``."""
    return bool(docker("image", "ls", "-q", image, check=False).strip())


def image_mb(image: str) -> float:
    """The image's size (MB, as ``docker image ls`` shows it)."""
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).strip()) / 1e6


def port(name: str, container_port: int) -> str:
    """``127.0.0.1:PORT`` the container's port is published on."""
    out = docker("port", name, f"{container_port}/tcp").split()
    return next(line for line in out if line.startswith("127.0.0.1:"))


def logs(name: str) -> str:
    """The container's last log lines."""
    done = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True,
                          text=True, timeout=30, check=False)
    return done.stdout + done.stderr


def remove(name: str) -> None:
    """Kills and removes the container."""
    docker("rm", "-f", "-v", name, check=False)


def rss_mb(name: str) -> float:
    """The resident memory of the container's PID 1 (the server), MB."""
    status = docker("exec", name, "cat", "/proc/1/status")
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def cpu_seconds(name: str) -> float:
    """User + system CPU seconds of the container's PID 1 and its reaped children."""
    fields = docker("exec", name, "cat", "/proc/1/stat").rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")
