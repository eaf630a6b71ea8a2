"""How many CPUs the server really has, and the workers and threads that follow from it.

torch sizes its thread pool by the host's cores; a pod limited to 2 CPUs on a 64-core
node then runs 64 threads and spends its quota being throttled. The quota is read the
way the kernel enforces it: the cgroup's CPU bandwidth (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) and the CPUs the process may run on
(``os.sched_getaffinity``), whichever is smaller.

Read once, at the edge (``__main__``); nothing below it looks at the machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# Above this many CPUs, more single-thread workers stop paying: each needs a batch of its
# own in flight, so at low load a request would run on one core while the others idle.
MAX_CPU_WORKERS = 4


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use, and where that number comes from."""

    cpus: int
    reason: str


@dataclass(frozen=True)
class Plan:
    """Inference workers and torch threads per worker, and why."""

    workers: int
    threads: int
    reason: str


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """Folders that may hold this process's CPU controller files, most specific first.

    Inside a container the cgroup namespace makes ``/proc/self/cgroup`` say ``/`` and
    the controller files sit at the mount's root; on a host they sit under the path
    that file names.
    """
    found: list[Path] = []
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy
            found.append(root / rel)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's mount
            for mount in (root / controllers, root / "cpu,cpuacct", root / "cpu"):
                found.append(mount / rel)
    found += [root, root / "cpu,cpuacct", root / "cpu"]
    return list(dict.fromkeys(found))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def cgroup_quota(root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[float, str] | None:
    """CPUs allowed by the cgroup's bandwidth limit, with the file it came from; None if none."""
    for folder in _cgroup_dirs(root, proc_cgroup):
        text = _read(folder / "cpu.max")  # v2: "<quota|max> <period>"
        if text is not None:
            quota, _, period = text.partition(" ")
            if quota == "max":
                return None
            try:
                return int(quota) / int(period or "100000"), f"{folder / 'cpu.max'} = {text}"
            except ValueError:
                continue
        quota_text = _read(folder / "cpu.cfs_quota_us")  # v1
        period_text = _read(folder / "cpu.cfs_period_us")
        if quota_text is not None and period_text is not None:
            try:
                quota_us, period_us = int(quota_text), int(period_text)
            except ValueError:
                continue
            if quota_us <= 0 or period_us <= 0:
                return None  # -1: no limit
            return quota_us / period_us, (f"{folder / 'cpu.cfs_quota_us'} = {quota_us} / "
                                          f"cpu.cfs_period_us = {period_us}")
    return None


def detect(root: Path = Path("/sys/fs/cgroup"),
           proc_cgroup: Path = Path("/proc/self/cgroup"),
           affinity: set[int] | None = None) -> CpuBudget:
    """The CPUs this process may use: the smaller of its affinity and its cgroup quota.

    A fractional quota (1.5 CPUs) rounds up: the half CPU still does work, and the
    threads it would run are cheaper than leaving it idle.
    """
    cpus = affinity if affinity is not None else _affinity()
    count = len(cpus)
    reason = f"{count} CPUs in the affinity mask"
    quota = cgroup_quota(root, proc_cgroup)
    if quota is not None:
        allowed, source = quota
        limit = max(1, math.ceil(allowed - 1e-9))
        if limit < count:
            return CpuBudget(limit, f"cgroup CPU quota {allowed:g} ({source}); "
                                    f"{count} CPUs in the affinity mask")
        reason += f"; cgroup CPU quota {allowed:g} is no tighter"
    else:
        reason += "; no cgroup CPU quota"
    return CpuBudget(count, reason)


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def plan(budget: CpuBudget, *, cuda: bool, workers: int | None, threads: int | None) -> Plan:
    """Workers and threads for ``budget``; a value given by the user is kept as it is.

    On a CPU, each worker runs one batch with its own threads, and ``workers x threads``
    equals the budget: single-thread workers (up to :data:`MAX_CPU_WORKERS`) never wait
    on each other at an OpenMP barrier, so a decode thread that takes a core for a few
    milliseconds delays one worker, not every thread of one big team. On CUDA one worker
    keeps the GPU fed; the CPU threads serve the pre- and post-processing around it.
    """
    cpus = budget.cpus
    why = [f"{cpus} CPUs ({budget.reason})"]
    if cuda:
        auto_workers, auto_threads = 1, cpus
        why.append("on CUDA one worker feeds the GPU")
    else:
        auto_workers = min(cpus, MAX_CPU_WORKERS)
        auto_threads = max(1, cpus // auto_workers)
        why.append(f"on a CPU one single-thread worker per CPU, at most {MAX_CPU_WORKERS} "
                   f"(then more threads each)")
    # A value given alone takes its share of the CPUs; the other fills the rest.
    if workers is None and threads is None:
        final_workers, final_threads = auto_workers, auto_threads
    elif threads is None:
        assert workers is not None
        final_workers, final_threads = workers, max(1, cpus // workers)
    elif workers is None:
        final_workers = 1 if cuda else max(1, min(MAX_CPU_WORKERS, cpus // threads))
        final_threads = threads
    else:
        final_workers, final_threads = workers, threads
    if workers is not None or threads is not None:
        why.append("as given: " + ", ".join(
            f"{name} {value}" for name, value in
            (("--inference_workers", workers), ("--torch_threads", threads))
            if value is not None))
    return Plan(final_workers, final_threads, "; ".join(why))
