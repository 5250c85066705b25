"""One MoE layer forward, benchmarked per docs/benchmark_protocol.md.

    python benchmarks/bench_moe.py --shapes A,B,C --methods AMXINT4,AMXINT8,BF16 \\
        --tokens 1,8,64,512 --threads 2 --isas all --json out.json --markdown out.md --chart out.png

In one process, per shape: random bf16 expert weights (seed 0) are made once, and the protocol's
inputs and the fp32 torch reference on those weights (once, at the largest M: the inputs of fewer
tokens are its first rows); the PyTorch bf16 peer (plain torch, same thread count) runs every M;
then per ISA tier (--isas: the tier in use, a list, or all), forced with kt_kernel.set_isa for
its block, per method one KTMoEWrapper (chunked_prefill_size = the largest M, so that every call
is one chunk) loads the weights and runs every M, and is freed before the next one is built (peak memory: the bf16 weights, the largest packed copy and the bandwidth
probe's buffer; printed as RSS along the way).
Each figure is the median wall time of >= 20 calls (and >= 0.5 s of calls) after warm-up, beside:
  - decode (M <= 8): effective weight bandwidth = distinct experts touched x 3 x H x I x bytes
    per weight / time, and its % of the read bandwidth measured in this run just before;
  - prefill (M >= 64): effective GFLOP/s (GOP/s for integer formats) = 2 x 3 x H x I x M x K / time,
    its % of the peak of the instruction family the method's kernels use, measured in this run, and
    its % of the roofline: attainable = min(peak, read bandwidth x intensity), intensity = those ops
    per byte of expert weights streamed (distinct experts touched x 3 x H x I x bytes per weight,
    each read once per call), so a case bound by the weight stream is held to the bandwidth;
  - the relative error ||out - ref|| / ||ref|| against the fp32 reference;
  - the speed-up over the PyTorch bf16 peer measured in the same run.
Both limits come from kt_kernel's C++ probe (kt_kernel._ext.probe_bandwidth / probe_peaks, the
same probe as `python -m kt_kernel.doctor`), on --threads std::threads pinned as the engine pins its own:
read bandwidth streams a --bw-mib buffer with the widest loads of the block's tier; the peak is that
of the family the method uses at that tier (kt_kernel.roofline.peak_family): at the amx tier the
tiles' (integer formats tdpbusd, BF16 tdpbf16ps; expert buckets under the layer's kernel_min_m
tokens run the vector kernel of the tier below, so where few tokens reach each expert, as at
M = 64 on shapes A and B, part of the work is not on tiles); below it integer formats vpdpbusd
(AVX512-VNNI) where available, else vpmaddubsw (zmm, or ymm at avx2), BF16 vdpbf16ps
(AVX512-BF16) where available, else fp32 FMA (zmm, or ymm at avx2); the PyTorch peer's are those
of the CPU's best tier.
--json keeps every figure; --markdown writes the results table, --chart a roofline-style PNG of
each case's fraction of its limit with the targets of issue 5 (bench_report.py; the same from a
--json file later: python benchmarks/bench_report.py out.json --chart out.png --markdown out.md).
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict

import torch

import kt_kernel
from kt_kernel import KTMoEWrapper, _ext
from kt_kernel.accuracy import relative_error
from kt_kernel.cpu import forced_isa
from kt_kernel.isa_option import add_isa_argument, isas_argument
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.roofline import INT_METHODS, bytes_per_weight, peak_family
from kt_kernel.threads import all_cores
from kt_kernel.timing import Stopwatch, time_calls
from kt_kernel.torch_moe import TORCH_PEER, moe_forward

import bench_report
from shapes import DECODE_TOKENS, TOKENS, Shape, get_shape


def other_load(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes over the next `seconds` (this one sleeps)."""
    clock = Stopwatch(load=True)
    time.sleep(seconds)
    return clock.other_cores()


# ---- the machine's limits, measured in this run ----------------------------------------------

class MachineLimits:
    """The machine's limits from kt_kernel's C++ probe, measured again whenever asked (the machine
    drifts), every sample kept. Threads: --threads, pinned by the engine's rule (kt/engine.h).

    Read bandwidth: _ext.probe_bandwidth(threads, mib, reps): `threads` threads each stream their
    slice of one `mib` MiB buffer (far above any L3). Peaks: _ext.probe_peaks(threads, seconds,
    families=[...]), all threads at once. A separate 256 MiB buffer flushes the caches in --cold mode."""

    def __init__(self, mib: int, threads: int, peak_seconds: float = 0.5):
        self.mib, self.threads, self.peak_seconds = mib, threads, peak_seconds
        self.buf = torch.ones(256 * 2**20 // 4, dtype=torch.float32)  # for flush() only
        self.samples: list[dict] = []
        self.peaks: list[dict] = []

    def peak(self, method: str, label: str, int_dot: bool | None = None) -> dict:
        """The peak of the instruction family `method` uses at the active tier, measured now:
        {"family", "gops" (best), "median", "unit", "instruction", "label"}; gops None where no
        family of the method is available (generic tier). int_dot: as kt_kernel.roofline.peak_family."""
        fam = peak_family(method, int_dot=int_dot)
        p = {"family": fam, "gops": None, "median": None, "unit": None, "instruction": None, "label": label}
        if fam is not None:
            f = _ext.probe_peaks(self.threads, self.peak_seconds, families=[fam])["families"][fam]
            p.update(gops=f["best"], median=f["median"], unit=f["unit"], instruction=f["instruction"])
        self.peaks.append(p)
        return p

    def bandwidth(self, label: str, reps: int = 10) -> dict:
        b = _ext.probe_bandwidth(self.threads, self.mib, reps)
        s = {"label": label, "best_gbps": b["best_gbps"], "median_gbps": b["median_gbps"], "reps": reps,
             "bytes": b["bytes"], "loads": b["loads"], "threads": b["threads"], "pinned": b["pinned"],
             "cpus": b["cpus"]}
        self.samples.append(s)
        return s

    def flush(self, nbytes: int = 256 * 2**20) -> None:
        """Evict the caches by reading nbytes of the buffer (not timed). Through numpy, on this
        thread alone: a torch op here would leave torch's OpenMP threads spinning into the call
        that follows."""
        self.buf.numpy()[: min(nbytes // 4, self.buf.numel())].sum()


# ---- one measured case -----------------------------------------------------------------------

def timed_case(fn, iters: int, warmup: int, flush=None, min_time: float = 0.5, settle: float = 0.05) -> dict:
    """Median wall time of fn over at least `iters` calls and at least `min_time` seconds, after
    `warmup` calls; each call timed alone (flush, if given, runs between calls, untimed). The
    time floor keeps the "other" figure meaningful: /proc/stat counts in 10 ms ticks.

    Sleeps `settle` seconds first: torch's OpenMP threads spin for some milliseconds after each
    torch op, and a kt_kernel call made meanwhile shares the cores with them (several times
    slower at decode)."""
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    clock = Stopwatch(load=True)
    t = time_calls(fn, iters, min_seconds=min_time, before=flush)
    return {"median_s": t.median, "min_s": min(t.seconds), "max_s": max(t.seconds), "iters": len(t.seconds),
            "busy_cores": t.busy_cores, "other_cores": clock.other_cores()}


def protocol_cases(shape: Shape, weights, tokens) -> dict:
    """Per M: the protocol's inputs x, topk_ids, topk_weights and the fp32 reference output.

    The inputs of M tokens are the first M rows of those of the largest M (row t of random_inputs
    does not depend on M), and each output row depends on its own input row only: one fp32
    reference at the largest M serves every M, in one pass over the widened weights."""
    x, ids, w = random_inputs(max(tokens), shape.H, shape.E, shape.K, seed=0)
    ref = moe_forward(x, ids, w, *weights, compute_dtype=torch.float32, out_dtype=torch.float32)
    return {M: (x[:M], ids[:M], w[:M], ref[:M]) for M in tokens}


FRESH_ROUTINGS = 64
# Read bandwidth readings before and after a decode case that differ by more than this fraction:
# the machine switched regimes in between (VMs can move between bandwidth regimes within minutes).
REGIME_SWITCH = 0.15


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *dests: str) -> None:
    """p.error for the first of these integer options that is not positive (dest names, e.g. round_calls)."""
    for dest in dests:
        if getattr(args, dest) <= 0:
            p.error(f"--{dest.replace('_', '-')} must be positive, got {getattr(args, dest)}")


def fresh_routings(shape: Shape, M: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """--fresh-routing: FRESH_ROUTINGS (topk_ids, topk_weights) of M tokens (seeds 1, 2, ...), which
    the timed calls take in turn, so that a call reads mostly other experts than the call before,
    as in generation (with E experts and K per token, about K/E of a call's experts were also the
    previous call's, and may still be in L3)."""
    return [random_inputs(M, shape.H, shape.E, shape.K, seed=1 + s)[1:] for s in range(FRESH_ROUTINGS)]


def in_turn(fn, x: torch.Tensor, routings: list):
    """A call of fn(x, ids, weights) that takes the next routing each time."""
    turn = itertools.cycle(routings)
    return lambda: fn(x, *next(turn))


def mean_distinct(routings: list) -> float:
    return statistics.mean(int(torch.unique(ids[ids >= 0]).numel()) for ids, _ in routings)


def roofline(ops: float, weight_bytes: float, bandwidth_gbps: float, peak_gops: float | None) -> dict:
    """Where a prefill case sits on the roofline: intensity = ops per byte of expert weights
    streamed (each touched expert's weights read once per call), attainable = min(peak, read
    bandwidth x intensity) in G ops/s, and which of the two bounds it ("memory" or "compute").
    attainable and bound are None where the tier has no measured peak (generic)."""
    intensity = ops / weight_bytes
    memory_roof = bandwidth_gbps * intensity
    if peak_gops is None:
        return {"intensity": intensity, "attainable_gops": None, "roof_bound": None}
    return {"intensity": intensity, "attainable_gops": min(peak_gops, memory_roof),
            "roof_bound": "memory" if memory_roof < peak_gops else "compute"}


def case_metrics(shape: Shape, M: int, topk_ids: torch.Tensor, bpw: float, t: float,
                 distinct: float | None = None) -> dict:
    """distinct: experts touched per call, when the timed calls did not all use topk_ids."""
    if distinct is None:
        distinct = int(torch.unique(topk_ids[topk_ids >= 0]).numel())
    touched = distinct * shape.weights_per_expert() * bpw
    ops = 2 * shape.weights_per_expert() * M * shape.K
    return {"distinct_experts": distinct, "weight_bytes_touched": touched, "bytes_per_weight": bpw,
            "tok_s": M / t, "gbps": touched / t / 1e9, "gops": ops / t / 1e9, "ops": ops}


# ---- the table --------------------------------------------------------------------------------

COLUMNS = [("method", 10), ("tier", 12), ("kernel", 38), ("M", 5), ("ms", 9), ("tok/s", 9),
           ("GB/s|GF/s", 14), ("%lim", 6), ("%roof", 6), ("x torch", 7), ("rel err", 8), ("busy", 5),
           ("other", 5)]


def table_line(values) -> str:
    return "  ".join(f"{v:<{w}}" if i < 3 else f"{v:>{w}}" for i, ((_, w), v) in enumerate(zip(COLUMNS, values)))


def table_header() -> str:
    head = table_line([c for c, _ in COLUMNS])
    return head + "\n" + "-" * len(head)


def table_row(r: dict) -> str:
    if r["M"] in DECODE_TOKENS:
        rate, pct = f"{r['gbps']:.1f} GB/s", r["pct_bandwidth"]
    else:
        unit = "GOP/s" if r["method"] in INT_METHODS else "GF/s"
        rate, pct = f"{r['gops']:.0f} {unit}", r["pct_peak"]
    cached = r.get("may_be_cached") and r["M"] in DECODE_TOKENS
    roof = r["pct_roofline"]
    roof_cached = "*" if r.get("may_be_cached") and roof is not None and r["roof_bound"] == "memory" else ""
    return table_line([
        r["method"], r["tier"], r["kernel"], r["M"], f"{r['ms']:.3f}", f"{r['tok_s']:.1f}",
        rate + ("*" if cached else ""), "-" if pct is None else f"{pct:.0f}%" + ("~" if r.get("regime_switch") else ""),
        "-" if roof is None else f"{roof:.0f}%{r['roof_bound'][0]}{roof_cached}",
        "-" if r["x_vs_torch"] is None else f"{r['x_vs_torch']:.2f}", f"{r['rel_err']:.4f}",
        f"{r['busy_cores']:.1f}", "-" if r["other_cores"] is None else f"{r['other_cores']:.1f}",
    ])


def cache_bytes() -> dict:
    """Data cache sizes from sysfs: {"L2": bytes summed over the cores used, "L3": bytes of one
    last-level cache}; empty where unknown. Caches shared by several cores are counted once."""
    seen, sizes = set(), {}
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
            for idx in sorted(os.listdir(base)):
                if not idx.startswith("index"):
                    continue
                d = f"{base}/{idx}"

                def rd(name: str, d=d) -> str:
                    with open(f"{d}/{name}") as f:
                        return f.read().strip()

                level, kind, shared = int(rd("level")), rd("type"), rd("shared_cpu_list")
                if level < 2 or kind == "Instruction" or (level, shared) in seen:
                    continue
                seen.add((level, shared))
                size = rd("size")
                n = int(size.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
                key = f"L{level}"
                sizes[key] = sizes.get(key, 0) + n if level == 2 else max(sizes.get(key, 0), n)
    except (OSError, ValueError, AttributeError):
        return {}
    return sizes


# ---- the run ----------------------------------------------------------------------------------

def rss_bytes() -> tuple[int | None, int]:
    """(resident bytes now, or None where /proc is missing; peak resident bytes of the process)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), peak
    except (OSError, ValueError, IndexError):
        return None, peak


def memory_line() -> str:
    now, peak = rss_bytes()
    return f"RSS {'?' if now is None else f'{now / 2**30:.2f}'} GiB, peak {peak / 2**30:.2f} GiB"


def run_shape(shape: Shape, methods, tokens, tiers, args, probe: MachineLimits, cache_total, emit) -> list[dict]:
    rows = []
    flush = probe.flush if args.cold else None

    def limits_now(label: str, method: str):
        """Both limits at the active tier, measured again right before a block: the machine drifts."""
        bw = probe.bandwidth(label)
        peak = probe.peak(method, label)
        print(f"  {label}: read bandwidth now {bw['best_gbps']:.1f} GB/s, peak of {peak['family'] or '-'} "
              f"{peak['gops'] or 0:.0f} {peak['unit'] or ''}", flush=True)
        return bw, peak

    def finish(r: dict, limits, peer_ms):
        """Completes and records r against limits; returns the limits for the block's next case."""
        bw, peak = limits
        r["bandwidth_gbps"] = bw["best_gbps"]
        r["pct_bandwidth"] = 100 * r["gbps"] / bw["best_gbps"]
        if r["M"] in DECODE_TOKENS:
            # The bandwidth again right after the case: this VM switches between regimes within
            # minutes. The case is held to the higher of the two readings (a lower bound on its
            # fraction), and a switch between them is flagged.
            after = probe.bandwidth(f"{shape.name} {r['method']} M={r['M']} after", reps=5)["best_gbps"]
            r["bandwidth_after_gbps"] = after
            r["pct_bandwidth"] = 100 * r["gbps"] / max(bw["best_gbps"], after)
            r["regime_switch"] = abs(after - bw["best_gbps"]) > REGIME_SWITCH * max(after, bw["best_gbps"])
            limits = ({**bw, "best_gbps": after}, peak)  # the next case's reading before it
        r["peak"] = peak
        g = peak["gops"]
        r["pct_peak"] = 100 * r["gops"] / g if g else None
        r["pct_roofline"] = None
        if r["M"] not in DECODE_TOKENS:
            r.update(roofline(r["ops"], r["weight_bytes_touched"], bw["best_gbps"], g))
            if r["attainable_gops"]:
                r["pct_roofline"] = 100 * r["gops"] / r["attainable_gops"]
        r["x_vs_torch"] = peer_ms / r["ms"] if peer_ms else None
        # Warm calls with the same routing re-read the same weights: below about twice the
        # L2 + L3 capacity, part of them comes from cache (AMD's L3 is a victim of L2).
        r["fresh_routing"] = r["M"] in routings
        r["may_be_cached"] = bool(cache_total and not r["fresh_routing"] and r["weight_bytes_touched"] <= 2 * cache_total)
        rows.append(r)
        emit(r)
        return limits

    made = Stopwatch()
    gate, up, down = random_expert_weights(shape.E, shape.H, shape.I, seed=0)
    gen_s = made.seconds
    print(f"  weights: bf16 {shape.source_bytes() / 1e9:.2f} GB made in {gen_s:.1f} s; {memory_line()}", flush=True)

    refs = Stopwatch()
    cases = protocol_cases(shape, (gate, up, down), tokens)
    print(f"  fp32 reference at M={max(tokens)} (its first M rows serve every M): {refs.seconds:.1f} s; "
          f"{memory_line()}", flush=True)

    # per decode M, the routings the timed calls take in turn (--fresh-routing)
    routings = {M: fresh_routings(shape, M) for M in tokens if args.fresh_routing and M in DECODE_TOKENS}

    def timed(fn, M: int, x, ids, w) -> tuple[dict, float | None]:
        """timed_case of fn on this case, with the routings in turn where --fresh-routing applies;
        also the mean experts touched per timed call then (None: those of ids)."""
        if M in routings:
            return (timed_case(in_turn(fn, x, routings[M]), args.iters, args.warmup, flush, args.min_time),
                    mean_distinct(routings[M]))
        return timed_case(lambda: fn(x, ids, w), args.iters, args.warmup, flush, args.min_time), None

    peer_ms = {}
    if not args.no_torch:
        # torch runs its own kernels whatever kt_kernel's tier: its limits are those of the CPU's best tier.
        with forced_isa(kt_kernel.cpu_info()["best_tier"]):
            limits = limits_now(f"{shape.name} {TORCH_PEER}", TORCH_PEER)
        for M in tokens:
            x, ids, w, ref = cases[M]
            out = moe_forward(x, ids, w, gate, up, down)
            tm, distinct = timed(lambda x_, i_, w_: moe_forward(x_, i_, w_, gate, up, down), M, x, ids, w)
            r = {"shape": shape.name, "method": TORCH_PEER, "tier": f"torch {torch.backends.cpu.get_cpu_capability()}",
                 "kernel": "F.linear bf16 per expert", "M": M, "ms": tm["median_s"] * 1e3, **tm,
                 "rel_err": relative_error(out, ref), "load_s": None}
            r.update(case_metrics(shape, M, ids, 2.0, tm["median_s"], distinct))
            peer_ms[M] = r["ms"]
            limits = finish(r, limits, None)

    for tier in tiers:
        # The tier is forced for the whole block: a layer fixes its kernels when it is built, and the
        # probe's loads and peak family follow the active tier.
        with forced_isa(tier):
            for method in methods:
                bpw = bytes_per_weight(method)
                loading = Stopwatch()
                # one chunk per call: each call of M tokens streams the weights once, as the
                # roofline assumes (the wrapper's default, 512, would run M = 2048 as 4 chunks)
                wrapper = KTMoEWrapper(layer_idx=0, num_experts=shape.E, num_experts_per_tok=shape.K,
                                       hidden_size=shape.H, moe_intermediate_size=shape.I,
                                       cpuinfer_threads=args.threads, threadpool_count=1, method=method,
                                       chunked_prefill_size=max(tokens))
                wrapper.load_weights_from_tensors(gate, up, down)
                load_s = loading.seconds
                packed_bpw = wrapper.weight_bytes / (shape.E * shape.weights_per_expert())
                print(f"  {method} on {tier}: loaded in {load_s:.1f} s, {wrapper.weight_bytes / 1e9:.2f} GB packed "
                      f"({8 * packed_bpw:.2f} bits/weight; formats() says {8 * bpw:.2f}); {memory_line()}",
                      flush=True)
                limits = limits_now(f"{shape.name} {method} {tier}", method)
                for M in tokens:
                    x, ids, w, ref = cases[M]
                    out = wrapper.forward(x, ids, w)
                    tm, distinct = timed(wrapper.forward, M, x, ids, w)
                    r = {"shape": shape.name, "method": method, "tier": wrapper.isa_tier,
                         "kernel": wrapper.kernel_name, "M": M, "ms": tm["median_s"] * 1e3, **tm,
                         "rel_err": relative_error(out, ref), "load_s": load_s, "packed_bytes_per_weight": packed_bpw}
                    r.update(case_metrics(shape, M, ids, bpw, tm["median_s"], distinct))
                    limits = finish(r, limits, peer_ms.get(M))
                # One wrapper at a time: its packed weights go before the next is built.
                del wrapper, out
                gc.collect()

    del gate, up, down, cases
    gc.collect()
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="A", help="comma-separated shape names from shapes.py (A, B, C; S is small)")
    p.add_argument("--methods", default=",".join(kt_kernel.METHODS),
                   help=f"comma-separated KTMoEWrapper methods (default: all of {', '.join(kt_kernel.METHODS)})")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated tokens per call M")
    p.add_argument("--threads", type=int, default=all_cores(),
                   help="threads for KTMoEWrapper (cpuinfer_threads) and for torch (default: all cores)")
    add_isa_argument(p, several=True)
    p.add_argument("--iters", type=int, default=20, help="timed calls per case (the protocol asks for >= 20)")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="seconds of timed calls per case at least (more calls than --iters where they are quick)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--cold", action="store_true",
                   help="evict the caches (read 256 MiB) before each timed call; default: warm, as the protocol")
    p.add_argument("--fresh-routing", action="store_true",
                   help=f"decode (M <= 8): the timed calls take {FRESH_ROUTINGS} random routings in turn, so each "
                        "reads mostly other experts than the call before, as in generation (weights from DRAM, "
                        "the rest warm); default: the same routing every call, as the protocol")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch bf16 peer")
    p.add_argument("--bw-mib", type=int, default=1024, help="MiB read by the bandwidth probe")
    p.add_argument("--peak-seconds", type=float, default=0.5, help="seconds per instruction-family peak probe")
    p.add_argument("--load-seconds", type=float, default=1.0,
                   help="seconds of the sample of other processes' load before and after the run")
    p.add_argument("--json", default=None, help="write every figure and the run's conditions here")
    p.add_argument("--chart", default=None, metavar="PNG",
                   help="draw the achieved fraction of each case's limit here (needs matplotlib: pip install -e \".[bench]\")")
    p.add_argument("--markdown", default=None, metavar="MD", help="write the results table as Markdown here")
    args = p.parse_args(argv)
    args.shapes = [get_shape(s.strip()).name for s in args.shapes.split(",") if s.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in kt_kernel.METHODS:
            p.error(f"unknown method {m!r}; valid methods: {', '.join(kt_kernel.METHODS)}")
    args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    if not args.tokens or any(t <= 0 for t in args.tokens):
        p.error(f"--tokens must be positive, got {args.tokens}")
    if args.threads <= 0:
        p.error(f"--threads must be positive, got {args.threads}")
    args.isas = isas_argument(p, args)
    if args.chart:
        try:  # before the run, not after it
            bench_report.require_matplotlib()
        except ImportError as e:
            p.error(str(e))
    if args.iters < 20:
        print(f"warning: --iters {args.iters} is below the protocol's 20 calls", file=sys.stderr)
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_clock = Stopwatch()
    torch.set_num_threads(args.threads)
    info = kt_kernel.cpu_info()
    caches = cache_bytes()
    cache_total = sum(caches.values())
    print(f"CPU: {info['brand']} ({info['vendor']}), {all_cores()} cores; best tier {info['best_tier']}, "
          f"active {info['active_tier']}{' (override ' + info['override'] + ')' if info['override'] else ''}; "
          f"AMX: {info['amx']}; caches {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in caches.items()) or '?'}")
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), kt_kernel {kt_kernel.__version__}, "
          f"threads {args.threads} (kt: cpuinfer_threads={args.threads}, threadpool_count=1; torch.set_num_threads)"
          f"{', cold caches' if args.cold else ', warm caches'}"
          f"{f', decode routings taken in turn from {FRESH_ROUTINGS}' if args.fresh_routing else ' (same inputs every call)'}")
    print(f"ISA tiers run: {', '.join(args.isas)} (each forced with kt_kernel.set_isa for its block)")

    load0 = other_load(args.load_seconds)
    print(f"other processes keep {'?' if load0 is None else f'{load0:.1f}'} of {all_cores()} cores busy "
          f"({args.load_seconds:g} s sample before the run): figures taken beside them are slowed")
    probing = Stopwatch()
    probe = MachineLimits(args.bw_mib, args.threads, args.peak_seconds)
    with forced_isa(info["best_tier"]):  # every family this CPU has
        bw0 = probe.bandwidth("start")
        peaks0 = _ext.probe_peaks(args.threads, args.peak_seconds)
    print(f"limits measured now by kt_kernel's C++ probe, read bandwidth and instruction peaks "
          f"({probing.seconds:.1f} s; {args.threads} threads "
          f"{'pinned to CPUs ' + ','.join(map(str, peaks0['cpus'])) if peaks0['pinned'] else 'unpinned'}, "
          f"tier {peaks0['tier']}):")
    print(f"  read bandwidth ({args.bw_mib} MiB, {bw0['loads']} loads): best {bw0['best_gbps']:.1f} GB/s, "
          f"median {bw0['median_gbps']:.1f} GB/s")
    for k, v in peaks0["families"].items():
        print(f"  {k:20s} {v['instruction']:26s} " + (f"best {v['best']:.0f} {v['unit']}, median {v['median']:.0f}"
                                                     if v["available"] else v["reason"]))
    print("  Both limits are measured again before each method's block, at its tier; %lim and %roof use those\n"
          "  figures (prefill: the peak of the family the method uses at that tier: integer methods tdpbusd at\n"
          "  amx, else vpdpbusd, else vpmaddubsw; BF16 tdpbf16ps at amx, else vdpbf16ps, else fp32 FMA; torch at\n"
          "  the best tier).")

    rows = []
    for name in args.shapes:
        shape = get_shape(name)
        shape_clock = Stopwatch()
        print(f"\nshape {shape.name}: H={shape.H} I={shape.I} E={shape.E} K={shape.K} ({shape.like})", flush=True)
        header_done = []

        def emit(r):
            if not header_done:
                print(table_header())
                header_done.append(True)
            print(table_row(r), flush=True)

        rows += run_shape(shape, args.methods, args.tokens, args.isas, args, probe, cache_total, emit)
        print(f"shape {shape.name} took {shape_clock.seconds:.1f} s; {memory_line()}", flush=True)

    print("\n".join([
        "",
        "ms: median of the timed calls. M <= 8: GB/s = distinct experts x 3HI x bytes/weight / ms; %lim of the",
        "  read bandwidth measured just before the block. * = those weights are under 2x the L2+L3 caches: warm",
        "  calls (the same routing every call) may read them partly from cache; --cold evicts the caches first.",
        "  The bandwidth is read again after each decode case and the case held to the higher reading;",
        "  ~ = the two readings differ by more than 15% (the machine switched regimes around the case).",
        "M >= 64: GF/s (GOP/s for integer formats) = 2 x 3HI x M x K / ms; %lim of the instruction-family peak",
        "  (at the amx tier the tiles'; expert buckets under the layer's kernel_min_m tokens run the vector kernel).",
        "  %roof of the roofline: attainable = min(peak, read bandwidth x intensity), intensity = 2 x 3HI x M x K /",
        "  (distinct experts x 3HI x bytes/weight), the ops per byte of expert weights streamed once per call.",
        "  m = memory-bound there (bandwidth x intensity < peak: %roof is of the bandwidth's rate), c = compute-bound",
        "  (%roof = %lim); m* = the weights are under 2x the L2+L3 caches, so warm calls may beat the bandwidth.",
        "x torch: torch-bf16 ms / ms. busy: this process's CPU seconds / wall seconds over the timed calls (all",
        "  threads, the caller's too). other: cores used by other processes meanwhile (/proc/stat).",
    ]))
    with forced_isa(info["best_tier"]):
        bw1 = probe.bandwidth("end")
    load1 = other_load(args.load_seconds)
    print(f"read bandwidth at the end: best {bw1['best_gbps']:.1f} GB/s, median {bw1['median_gbps']:.1f} GB/s; "
          f"other processes {'?' if load1 is None else f'{load1:.1f}'} cores; total {run_clock.seconds:.0f} s; "
          f"peak RSS {rss_bytes()[1] / 2**30:.2f} GiB")

    result = {
        "protocol": "docs/benchmark_protocol.md",
        "command": ["benchmarks/bench_moe.py", *argv],
        "conditions": {"threads": args.threads, "isas": args.isas, "isa_override": info["override"] or None,
                       "cold_caches": args.cold, "fresh_routing": args.fresh_routing,
                       "iters": args.iters, "min_time_s": args.min_time, "warmup": args.warmup,
                       "cpu_info": info, "cache_bytes": caches,
                       "cores": all_cores(), **bench_report.software(),
                       "formats": kt_kernel.formats(), "peak_rss_bytes": rss_bytes()[1]},
        "other_load_cores": {"start": load0, "end": load1},
        "limits": {"bandwidth": probe.samples, "peaks_start": peaks0, "peaks_blocks": probe.peaks,
                   "note": "kt_kernel C++ probe (_ext.probe_bandwidth / probe_peaks), threads pinned by the "
                           "engine's rule"},
        "shapes": {n: asdict(get_shape(n)) for n in args.shapes},
        "results": rows,
    }
    bench_report.write_files(result, args.json, args.markdown)
    if args.chart:
        bench_report.draw_chart(result, args.chart)
        print(f"wrote {args.chart}")
    return result


if __name__ == "__main__":
    main()
