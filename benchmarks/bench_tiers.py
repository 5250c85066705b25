"""One ISA tier against another at decode, timed in alternating rounds so that the machine's drift cancels.

    python benchmarks/bench_tiers.py --shapes A,B,C --methods AMXINT4,AMXINT8,BF16 --tokens 1,8 \\
        --tier avx2 --reference avx512_bf16 --json tiers.json --markdown tiers.md

Issue 5 asks the AVX2 tier (forced) to decode within 1.3x of the AVX512 tier's time. bench_moe.py
times one tier's block after the other's, minutes apart; on a host whose clock and read bandwidth
move by a third within minutes, the ratio of those times is as noisy as the host. Here, per shape
and method, one layer per tier is built on the same weights (each with its tier forced, which the
layer keeps), and per M the two are timed in rounds: each round runs --round-calls calls of each
layer (and at least --round-time seconds), the order flipped from round to round (T R, R T, ...),
so that a drift slower than a round weighs on both alike. A round's ratio is the tier's median time
over the reference's; a case reports the median of its rounds' ratios, their lowest and highest,
and each layer's median over all its calls. Routings are fresh, as bench_moe.py --fresh-routing:
both layers' timed calls take the same FRESH_ROUTINGS routings in turn, so each call reads mostly
other experts than the call before (from DRAM), as in generation.
Beside it: the relative difference of the two layers' outputs on the same call (same weights,
different kernels), and the read bandwidth and clock at the start and end of each shape.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys

import kt_kernel
from kt_kernel import KTMoEWrapper, _ext
from kt_kernel.accuracy import relative_error
from kt_kernel.cpu import forced_isa
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.threads import all_cores
from kt_kernel.timing import Stopwatch, time_calls

import bench_report
from bench_moe import FRESH_ROUTINGS, fresh_routings, in_turn, mean_distinct, require_positive
from shapes import DECODE_TOKENS, get_shape

# Issue 5: the AVX2 tier decodes within 1.3x of the AVX512 tier's time.
TARGET_RATIO = 1.3
METHODS = tuple(kt_kernel.METHODS)


def default_reference() -> str | None:
    """The best AVX512 tier this CPU runs (decode runs the vector kernels on every tier above it)."""
    avx512 = [t for t in kt_kernel.cpu_info()["tiers"] if t.startswith("avx512")]
    return avx512[-1] if avx512 else None


def timed_round(fn, calls: int, min_time: float) -> list[float]:
    """Wall times of at least `calls` calls of fn and at least `min_time` seconds of them."""
    return time_calls(fn, calls, min_seconds=min_time).seconds


def interleaved(fns: dict, rounds: int, calls: int, min_time: float, warmup: int) -> dict:
    """fns: {"tier": fn, "reference": fn}. Rounds in alternating order; per round the ratio of the
    tier's median time to the reference's. Returns both layers' medians over all calls (ms), the
    rounds' ratios and their median, lowest and highest."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in fns}
    ratios = []
    for r in range(rounds):
        order = ["tier", "reference"] if r % 2 == 0 else ["reference", "tier"]
        med = {}
        for k in order:
            times = timed_round(fns[k], calls, min_time)
            samples[k] += times
            med[k] = statistics.median(times)
        ratios.append(med["tier"] / med["reference"])
    return {"tier_ms": statistics.median(samples["tier"]) * 1e3,
            "reference_ms": statistics.median(samples["reference"]) * 1e3,
            "calls": {k: len(v) for k, v in samples.items()},
            "ratios": ratios, "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def machine_now(threads: int, mib: int) -> dict:
    """Read bandwidth (best of 5, GB/s) on `threads` pinned threads and the clock (GHz) now."""
    return {"bandwidth_gbps": _ext.probe_bandwidth(threads, mib, 5)["best_gbps"],
            "clock_ghz": _ext.probe_clock_ghz()}


def build(shape, method: str, tier: str, weights, threads: int) -> KTMoEWrapper:
    with forced_isa(tier):
        w = KTMoEWrapper(layer_idx=0, num_experts=shape.E, num_experts_per_tok=shape.K, hidden_size=shape.H,
                         moe_intermediate_size=shape.I, cpuinfer_threads=threads, threadpool_count=1,
                         method=method, chunked_prefill_size=max(DECODE_TOKENS))
        w.load_weights_from_tensors(*weights)
    return w


def run_shape(shape, args, emit) -> tuple[list[dict], dict]:
    weights = random_expert_weights(shape.E, shape.H, shape.I, seed=0)
    before = machine_now(args.threads, args.bw_mib)
    rows = []
    for method in args.methods:
        layers = {"tier": build(shape, method, args.tier, weights, args.threads),
                  "reference": build(shape, method, args.reference, weights, args.threads)}
        for M in args.tokens:
            routings = fresh_routings(shape, M)
            x = random_inputs(M, shape.H, shape.E, shape.K, seed=0)[0]
            ids, w = routings[0]
            outs = {k: layer.forward(x, ids, w) for k, layer in layers.items()}
            fns = {k: in_turn(layer.forward, x, routings) for k, layer in layers.items()}
            r = {"shape": shape.name, "method": method, "M": M, "tier": args.tier, "reference": args.reference,
                 "kernels": {args.tier: layers["tier"].kernel_name, args.reference: layers["reference"].kernel_name},
                 "distinct_experts": mean_distinct(routings),
                 "output_rel_diff": relative_error(outs["tier"], outs["reference"].float()),
                 **interleaved(fns, args.rounds, args.round_calls, args.round_time, args.warmup)}
            rows.append(r)
            emit(r)
        del layers, fns, outs
        gc.collect()
    after = machine_now(args.threads, args.bw_mib)
    return rows, {"before": before, "after": after}


def row_line(r: dict) -> str:
    ok = "yes" if r["ratio"] <= TARGET_RATIO else "NO"
    return (f"{r['shape']:5s} {r['method']:8s} {r['M']:>3d}  {r['tier_ms']:9.3f}  {r['reference_ms']:9.3f}  "
            f"{r['ratio']:5.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})  {len(r['ratios']):>3d}  "
            f"{ok:>6s}  {r['output_rel_diff']:.4f}")


def markdown(result: dict) -> str:
    c = result["conditions"]
    tier, ref = c["tier"], c["reference"]
    lines = [f"`python3 {' '.join(result['command'])}`", "",
             f"{c['cpu']}, {c['threads']} threads; {tier} against {ref}, {c['rounds']} alternating rounds per "
             f"case, decode routings taken in turn from {FRESH_ROUTINGS}; torch {c['torch']}, kt_kernel "
             f"{c['kt_kernel']}; {c['time']}.", "",
             f"ms: each layer's median over all its timed calls. ratio: median over the rounds of the {tier} "
             f"layer's median time / the {ref} layer's in the same round (lowest-highest round in brackets); "
             f"target (issue 5): <= {TARGET_RATIO}. diff: relative difference of the two layers' outputs.", "",
             f"| shape | method | M | {tier} ms | {ref} ms | ratio (rounds' range) | <= {TARGET_RATIO} | diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| {r['shape']} | {r['method']} | {r['M']} | {r['tier_ms']:.3g} | {r['reference_ms']:.3g} | "
                     f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | "
                     f"{'yes' if r['ratio'] <= TARGET_RATIO else 'no'} | {r['output_rel_diff']:.4f} |")
    lines.append("")
    for name, m in result["machine"].items():
        b, a = m["before"], m["after"]
        lines.append(f"Shape {name}: read bandwidth {b['bandwidth_gbps']:.1f} -> {a['bandwidth_gbps']:.1f} GB/s, "
                     f"clock {b['clock_ghz']:.2f} -> {a['clock_ghz']:.2f} GHz (start -> end of the shape).")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="A", help="comma-separated shape names from shapes.py (A, B, C; S is small)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated methods (default {','.join(METHODS)})")
    p.add_argument("--tokens", default=",".join(map(str, DECODE_TOKENS)),
                   help=f"comma-separated decode tokens per call, each <= {max(DECODE_TOKENS)}")
    p.add_argument("--tier", default="avx2", help="the tier measured (default avx2)")
    p.add_argument("--reference", default=None, help="the tier it is held to (default: the CPU's best AVX512 tier)")
    p.add_argument("--threads", type=int, default=all_cores(), help="cpuinfer_threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=12, help="alternating rounds per case")
    p.add_argument("--round-calls", type=int, default=5, help="calls per layer and round, at least")
    p.add_argument("--round-time", type=float, default=0.25, help="seconds per layer and round, at least")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per layer before the rounds")
    p.add_argument("--bw-mib", type=int, default=1024, help="MiB read by the bandwidth probe")
    p.add_argument("--json", default=None, help="write every round's figures and the run's conditions here")
    p.add_argument("--markdown", default=None, metavar="MD", help="write the table as Markdown here")
    args = p.parse_args(argv)
    try:
        args.shapes = [get_shape(s.strip()).name for s in args.shapes.split(",") if s.strip()]
    except KeyError as e:
        p.error(str(e))
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in kt_kernel.METHODS:
            p.error(f"unknown method {m!r}; valid methods: {', '.join(kt_kernel.METHODS)}")
    args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    if not args.tokens or any(t <= 0 or t > max(DECODE_TOKENS) for t in args.tokens):
        p.error(f"--tokens must be decode token counts 1..{max(DECODE_TOKENS)}, got {args.tokens}")
    args.reference = args.reference or default_reference()
    tiers = kt_kernel.cpu_info()["tiers"]
    if args.reference is None:
        p.error(f"this CPU has no AVX512 tier; name --reference, one of {', '.join(tiers)}")
    for opt, t in (("--tier", args.tier), ("--reference", args.reference)):
        if t not in tiers:
            p.error(f"{opt} {t}: this CPU runs {', '.join(tiers)}")
    if args.tier == args.reference:
        p.error(f"--tier and --reference are both {args.tier}")
    require_positive(p, args, "threads", "rounds", "round_calls")
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_clock = Stopwatch()
    info = kt_kernel.cpu_info()
    print(f"CPU: {info['brand']}, {all_cores()} cores, {args.threads} threads; {args.tier} against {args.reference}, "
          f"{args.rounds} alternating rounds of >= {args.round_calls} calls and >= {args.round_time:g} s per layer")
    print(f"{'shape':5s} {'method':8s} {'M':>3s}  {args.tier + ' ms':>9s}  {args.reference + ' ms':>9s}  "
          f"ratio (rounds)  {'n':>3s}  <={TARGET_RATIO}  diff")
    rows, machine = [], {}
    for name in args.shapes:
        shape_rows, machine[name] = run_shape(get_shape(name), args, lambda r: print(row_line(r), flush=True))
        rows += shape_rows
        b, a = machine[name]["before"], machine[name]["after"]
        print(f"  shape {name}: read bandwidth {b['bandwidth_gbps']:.1f} -> {a['bandwidth_gbps']:.1f} GB/s, "
              f"clock {b['clock_ghz']:.2f} -> {a['clock_ghz']:.2f} GHz", flush=True)
    print(f"total {run_clock.seconds:.0f} s")
    result = {
        "command": ["benchmarks/bench_tiers.py", *argv],
        "conditions": {"cpu": info["brand"], "threads": args.threads, "tier": args.tier, "reference": args.reference,
                       "rounds": args.rounds, "round_calls": args.round_calls, "round_time_s": args.round_time,
                       "warmup": args.warmup, "fresh_routings": FRESH_ROUTINGS, "target_ratio": TARGET_RATIO,
                       **bench_report.software()},
        "machine": machine,
        "results": rows,
    }
    bench_report.write_files(result, args.json, args.markdown, markdown)
    return result


if __name__ == "__main__":
    main()
