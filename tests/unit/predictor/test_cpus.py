"""cpus: the CPU budget read from real cgroup files (laid out in a folder) and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictor import cpus


def _v2(tmp_path: Path, cpu_max: str | None, path: str = "kubepods/pod1") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    folder = root / path
    folder.mkdir(parents=True)
    if cpu_max is not None:
        (folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text(f"0::/{path}\n")
    return root, proc


def _v1(tmp_path: Path, quota: int, period: int = 100_000) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    return root, proc


def test_v2_quota_limits_a_pod_below_the_host_cores(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "200000 100000")
    budget = cpus.detect(root, proc, affinity=set(range(64)))
    assert budget.cpus == 2
    assert "cpu.max = 200000 100000" in budget.reason
    assert "64 CPUs in the affinity mask" in budget.reason


def test_v2_fractional_quota_rounds_up(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "150000 100000")
    assert cpus.detect(root, proc, affinity=set(range(8))).cpus == 2


def test_v2_without_a_limit_uses_the_affinity(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "max 100000")
    budget = cpus.detect(root, proc, affinity={0, 1, 2})
    assert budget.cpus == 3
    assert "no cgroup CPU quota" in budget.reason


def test_v2_inside_a_container_reads_the_mount_root(tmp_path: Path) -> None:
    # With a cgroup namespace, /proc/self/cgroup says "/" and the files sit at the root.
    root, proc = _v2(tmp_path, None, path="x")
    (root / "cpu.max").write_text("400000 100000\n")
    proc.write_text("0::/\n")
    assert cpus.detect(root, proc, affinity=set(range(16))).cpus == 4


def test_v1_quota(tmp_path: Path) -> None:
    root, proc = _v1(tmp_path, 300_000)
    budget = cpus.detect(root, proc, affinity=set(range(32)))
    assert budget.cpus == 3
    assert "cpu.cfs_quota_us = 300000" in budget.reason


def test_v1_no_limit_and_affinity_tighter_than_quota(tmp_path: Path) -> None:
    root, proc = _v1(tmp_path, -1)
    assert cpus.detect(root, proc, affinity={0, 1}).cpus == 2
    root2, proc2 = _v1(tmp_path / "b", 800_000)
    budget = cpus.detect(root2, proc2, affinity={5})
    assert budget.cpus == 1
    assert "is no tighter" in budget.reason


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    budget = cpus.detect(tmp_path / "none", tmp_path / "none-cgroup", affinity={0, 1, 2, 3})
    assert budget.cpus == 4


def test_this_machine_is_read_without_error() -> None:
    budget = cpus.detect()
    assert budget.cpus >= 1
    assert budget.reason


@pytest.mark.parametrize(("count", "workers", "threads"),
                         [(1, 1, 1), (2, 2, 1), (4, 4, 1), (8, 4, 2), (16, 4, 4), (6, 4, 1)])
def test_cpu_plan_single_thread_workers_up_to_four(count: int, workers: int,
                                                   threads: int) -> None:
    plan = cpus.plan(cpus.CpuBudget(count, "test"), cuda=False, workers=None, threads=None)
    assert (plan.workers, plan.threads) == (workers, threads)
    assert plan.workers * plan.threads <= count
    assert f"{count} CPUs (test)" in plan.reason


def test_cuda_plan_is_one_worker_with_every_cpu() -> None:
    plan = cpus.plan(cpus.CpuBudget(8, "test"), cuda=True, workers=None, threads=None)
    assert (plan.workers, plan.threads) == (1, 8)
    assert "CUDA" in plan.reason


def test_values_given_by_the_user_are_kept() -> None:
    budget = cpus.CpuBudget(8, "test")
    plan = cpus.plan(budget, cuda=False, workers=1, threads=None)
    assert (plan.workers, plan.threads) == (1, 8)  # threads share the CPUs among the workers
    assert "--inference_workers 1" in plan.reason
    plan = cpus.plan(budget, cuda=False, workers=None, threads=3)
    assert (plan.workers, plan.threads) == (2, 3)  # workers share the CPUs among the threads
    plan = cpus.plan(cpus.CpuBudget(2, "test"), cuda=False, workers=None, threads=2)
    assert (plan.workers, plan.threads) == (1, 2)
    plan = cpus.plan(budget, cuda=False, workers=2, threads=2)
    assert (plan.workers, plan.threads) == (2, 2)


def test_flags_accept_auto_and_integers() -> None:
    import argparse

    from predictor.config import add_arguments, from_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--model_name", default="detector")
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.inference_workers is None
    assert args.torch_threads is None
    cfg = from_args(args, workers=3, threads=2)
    assert cfg.batching.inference_workers == 3
    assert cfg.model.torch_threads == 2
    args = parser.parse_args(["--inference_workers", "2", "--torch_threads", "AUTO"])
    assert args.inference_workers == 2
    assert args.torch_threads is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--torch_threads", "many"])
