"""Weight quantizers per ISA tier: single-thread ns per weight, and bit-identity to the reference.

    python benchmarks/bench_quantize.py --shapes A --formats int4_g32,int8_pc --reps 11

For each shape, the gate/up matrix [I, H] and the down matrix [H, I] of one expert (bf16-valued
random weights, seed 0, as a converter reads them) are quantized by every tier the host runs (set
with kt_kernel.set_isa), tiers alternating within each repetition so that a noisy shared machine
affects them alike; the figure is the median over --reps calls of `_ext.quantize` (which includes
the binding's copy of the results). Every tier's output must equal the generic tier's (the
reference quantizer) bit for bit, or the script fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import kt_kernel
from kt_kernel import _ext
from kt_kernel.timing import Stopwatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import SHAPES, SMALL_SHAPES  # noqa: E402
from kt_kernel.formats import formats as method_formats


def _bf16_valued(N: int, K: int, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((N, K)).astype(np.float32)
    return (w.view(np.uint32) & 0xFFFF0000).view(np.float32)


def _same(a: dict, b: dict) -> bool:
    return all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a if k not in ("format", "N", "K"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="A", help="comma-separated names from benchmarks/shapes.py")
    p.add_argument("--formats", default=",".join(f["name"] for f in method_formats()))
    p.add_argument("--tiers", default=None, help="default: every tier the host runs")
    p.add_argument("--reps", type=int, default=11)
    a = p.parse_args(argv)
    shapes = {**SMALL_SHAPES, **SHAPES}
    tiers = a.tiers.split(",") if a.tiers else list(kt_kernel.cpu_info()["tiers"])
    before = kt_kernel.cpu_info()["override"]
    ok = True
    try:
        for sname in a.shapes.split(","):
            s = shapes[sname]
            for N, K, what in [(s.I, s.H, "gate/up"), (s.H, s.I, "down")]:
                w = _bf16_valued(N, K)
                for fmt in a.formats.split(","):
                    times = {t: [] for t in tiers}
                    names, outs = {}, {}
                    for _ in range(a.reps):
                        for t in tiers:
                            kt_kernel.set_isa(t)
                            clock = Stopwatch()
                            outs[t] = _ext.quantize(fmt, w)
                            times[t].append(clock.seconds / w.size * 1e9)
                            names[t] = _ext.quantizer(fmt)
                    kt_kernel.set_isa("generic")
                    ref = _ext.quantize(fmt, w)
                    base = float(np.median(times[tiers[0]]))
                    for t in tiers:
                        med = float(np.median(times[t]))
                        same = _same(outs[t], ref)
                        ok &= same
                        print(f"{sname} {what:7s} [{N}, {K}] {fmt:8s} {t:12s} {names[t]:30s} "
                              f"{med:7.3f} ns/weight  {base / med:5.1f}x  {'bit-identical' if same else 'DIFFERS'}")
    finally:
        kt_kernel.set_isa(before or None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
