"""bench_numa.py runs its three placements (on a simulated two-node topology here: the same
memory for all, so only the script is checked, not the speed)."""
from __future__ import annotations

import os

import pytest

import bench_numa


def test_bench_numa_runs_every_mode(monkeypatch, capsys):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    monkeypatch.setenv("KT_KERNEL_NUMA_TOPOLOGY", f"0={cpus[0]};2={cpus[1]}")
    assert bench_numa.main(["--shape", "A", "--tokens", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "nodes [0, 2]" in out
    for mode in ("local", "remote", "unbound"):
        assert f"  {mode}" in out and "of local's time" in out
