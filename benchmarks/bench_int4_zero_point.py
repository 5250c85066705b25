"""The cost of int4_g32_zp's zero point: int4_g32 (AMXINT4) against int4_g32_zp (RAWINT4, the same
float weights quantized at load) on one shape, in one process, rounds alternating between the two
layers so that both see the same memory-bandwidth state; the median of 9 rounds per M
(docs/benchmarks/notes.md, "int4_g32_zp: the zero point's cost").

    python3 benchmarks/bench_int4_zero_point.py [--shape A]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from kt_kernel import KTMoEWrapper
from kt_kernel.random_moe import random_expert_weights, random_inputs
from shapes import SHAPES

METHODS = ("AMXINT4", "RAWINT4")  # int4_g32, and int4_g32_zp through a release method
RUNS = ((1, 40), (8, 20), (512, 2))  # (M, calls per round)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="A", choices=list(SHAPES))
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    s = SHAPES[args.shape]
    gate, up, down = random_expert_weights(s.E, s.H, s.I, seed=0)
    layers = {}
    for method in METHODS:
        w = KTMoEWrapper(0, s.E, s.K, s.H, s.I, num_gpu_experts=0, cpuinfer_threads=2, method=method,
                         chunked_prefill_size=512)
        w.load_weights_from_tensors(gate, up, down)
        layers[method] = w
        print(f"{method}: {w.formats[0]}, {w.kernel_description}")
    for M, calls in RUNS:
        x, ids, wts = random_inputs(M, s.H, s.E, s.K, seed=M)
        ms = {m: [] for m in layers}
        for _ in range(args.rounds):
            for m, w in layers.items():
                w.forward(x, ids, wts)
                t0 = time.perf_counter()
                for _ in range(calls):
                    w.forward(x, ids, wts)
                ms[m].append((time.perf_counter() - t0) / calls * 1e3)
        med = {m: statistics.median(v) for m, v in ms.items()}
        print(f"{args.shape} M={M}: int4_g32 {med['AMXINT4']:.3f} ms, int4_g32_zp {med['RAWINT4']:.3f} ms, "
              f"zp / int4_g32 {med['RAWINT4'] / med['AMXINT4']:.3f}")


if __name__ == "__main__":
    main()
