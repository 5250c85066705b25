"""Decode on a multi-node machine with each sub-pool's weights local, remote, or unbound: what
NUMA placement (KTMoEWrapper numa_nodes) is worth. For a real multi-node host; on a one-node
machine (or under KT_KERNEL_NUMA_TOPOLOGY's simulation) every mode reads the same memory and the
figures only check the script.

    python benchmarks/bench_numa.py --shape A --nodes 0,1 --tokens 1,8

Per mode, one AMXINT4 layer of the shape with threadpool_count = len(--nodes), sub-pool p's threads
on node nodes[p]'s allowed CPUs (kt_kernel.numa), and its share of the weights
  local     on node nodes[p] (numa_nodes=nodes: what KTMoEWrapper does),
  remote    on node nodes[p + 1] (every sub-pool reads the next node's memory),
  unbound   where the kernel's default policy puts it (first touch by the packing threads);
the median of --iters decode calls (fresh routing each call, so that the weights come from
memory) and the effective weight bandwidth. Prints one line per mode and M, and the ratio of
each mode to local.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kt_kernel import _ext  # noqa: E402
from kt_kernel.formats import formats  # noqa: E402
from kt_kernel.numa import placement, topology  # noqa: E402
from kt_kernel.random_moe import random_expert_weights  # noqa: E402
from shapes import SHAPES  # noqa: E402

METHOD = "AMXINT4"


def layer(shape, pools: list, seed: int = 0):
    engine = _ext.Engine.shared(sum(len(c) for c, _ in pools), len(pools), pools)
    native = _ext.MoeLayer(engine, shape.E, shape.K, shape.H, shape.I, METHOD, [1] * shape.E, 512)
    gate, up, down = random_expert_weights(shape.E, shape.H, shape.I, seed=seed, dtype=torch.bfloat16)
    pmap = torch.arange(shape.E, dtype=torch.int64)
    native.load_from_tensors(gate.data_ptr(), up.data_ptr(), down.data_ptr(), "bfloat16", pmap.data_ptr(), shape.E)
    return native


def decode_ms(native, shape, M: int, iters: int) -> float:
    g = torch.Generator().manual_seed(M)
    x = torch.randn(M, shape.H, generator=g).bfloat16()
    w = torch.rand(M, shape.K, generator=g)
    times = []
    for i in range(iters + 3):
        ids = torch.stack([torch.randperm(shape.E, generator=g)[:shape.K] for _ in range(M)]).to(torch.int32)
        t = time.perf_counter()
        job, _ = native.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), False, w.data_ptr(), "float32", M)
        job.wait()
        if i >= 3:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="A", choices=sorted(SHAPES))
    p.add_argument("--nodes", default=None, help="comma-separated node ids (default: every node with allowed CPUs)")
    p.add_argument("--tokens", default="1,8")
    p.add_argument("--iters", type=int, default=30)
    a = p.parse_args(argv)
    shape = SHAPES[a.shape]
    nodes = [int(n) for n in a.nodes.split(",")] if a.nodes else [n.id for n in topology() if n.allowed]
    local = placement(nodes, len(nodes))
    modes = {"local": local,
             "remote": [(cpus, local[(p + 1) % len(local)][1]) for p, (cpus, _) in enumerate(local)],
             "unbound": [(cpus, -1) for cpus, _ in local]}
    bpw = next(f for f in formats() if f["method"] == METHOD)["bits_per_weight"] / 8
    print(f"shape {a.shape}: H={shape.H} I={shape.I} E={shape.E} K={shape.K}; nodes {nodes}; {METHOD}")
    results = {}
    for mode, pools in modes.items():
        native = layer(shape, pools)
        for M in (int(t) for t in a.tokens.split(",")):
            ms = decode_ms(native, shape, M, a.iters)
            distinct = min(shape.E, M * shape.K)
            gbs = distinct * 3 * shape.H * shape.I * bpw / ms / 1e6
            results[(mode, M)] = ms
            print(f"  {mode:8s} M={M:<3d} {ms:8.3f} ms  {gbs:6.1f} GB/s  x{ms / results.get(('local', M), ms):.2f} "
                  "of local's time")
        del native
    return 0


if __name__ == "__main__":
    sys.exit(main())
