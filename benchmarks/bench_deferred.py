"""Deferred experts: what max_deferred_experts_per_token = d costs in accuracy and saves in time.

    python benchmarks/bench_deferred.py --json deferred.json --markdown deferred.md

Accuracy: the tiny models of kt_kernel.models (every architecture, seed 0) with their routed
experts on kt_kernel in fp32 (attach's rule: every MoE layer defers d but the last), teacher-forced
over REFERENCE_PROMPT, against the same checkpoint in transformers' eager experts in fp32: mean
KL(reference || run) and top-1 agreement over the 339 positions, for d = 0, 1, 2 (where d < top-k).

Time: one layer of a protocol shape (docs/benchmark_protocol.md; A by default), per method and M: the
time from submit_forward to sync_forward's return of a layer with d > 0 (its kept experts) against
the same layer with d = 0, in alternating rounds (drift weighs on both alike), routings taken in
turn from bench_moe.FRESH_ROUTINGS. Each timed call is followed by the forward of a next layer
(layer_idx + 1: one expert of I = 32 on the same engine and hidden size), which adds the deferred
part; its time less its time after a d = 0 call is the deferred job's, which an engine overlaps
with the GPU's next layer. So every timed call starts on an idle engine.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import kt_kernel
from kt_kernel import KTMoEWrapper
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.threads import all_cores, torch_threads
from kt_kernel.timing import Stopwatch

import bench_report
from bench_moe import FRESH_ROUTINGS, fresh_routings, require_positive
from shapes import get_shape

METHODS = tuple(kt_kernel.METHODS)
DS = (0, 1, 2)
NEXT_I = 32  # intermediate size of the timed layer's successor: it only has to add the deferred part


# ---- accuracy -----------------------------------------------------------------------------


def accuracy(archs, methods, ds, threads: int, emit) -> list[dict]:
    from kt_kernel.integrations.transformers import kt_layers, load_model, load_reference
    from kt_kernel.models import (ARCHITECTURES, PrintableTokenizer, build_tiny_model, logit_agreement,
                                  teacher_forced_logits)
    from kt_kernel.models.compare import REFERENCE_PROMPT

    prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        for arch in archs:
            path = build_tiny_model(arch, Path(tmp) / arch, seed=0)
            ref_logits = teacher_forced_logits(load_reference(path), prompt)
            top_k = ARCHITECTURES[arch].tiny["num_experts_per_tok"]
            for method in methods:
                for d in ds:
                    if d >= top_k:
                        continue
                    model = load_model(path, method, dtype=torch.float32, max_deferred_experts_per_token=d,
                                       cpuinfer_threads=threads)
                    layers = kt_layers(model)
                    a = logit_agreement(teacher_forced_logits(model, prompt), ref_logits)
                    r = {"arch": arch, "method": method, "d": d, "top_k": top_k, "positions": a.positions,
                         "kl_mean": a.kl_mean, "kl_max": a.kl_max, "top1": a.top1,
                         "deferring_layers": [k.layer_idx for k in layers
                                              if k.wrapper is not None and k.wrapper.max_deferred_experts_per_token]}
                    rows.append(r)
                    emit(r)
                    del model, layers
                    gc.collect()
    return rows


# ---- time ---------------------------------------------------------------------------------


def timed_pair(layer, nxt, x, routing, nxt_inputs) -> tuple[float, float]:
    """(seconds from submit_forward to sync_forward's return of layer, seconds of nxt's forward)."""
    own = Stopwatch()
    layer.submit_forward(x, *routing)
    layer.sync_forward()
    own_s, after = own.seconds, Stopwatch()
    nxt.forward(*nxt_inputs)
    return own_s, after.seconds


def rounds(layers: dict, nxt, x, routings, nxt_inputs, n_rounds: int, calls: int, warmup: int) -> dict:
    """layers: {0: the d = 0 layer, d: the d layer}. Per round, `calls` calls of each in turn-flipped
    order; medians over all calls, and per round the d layer's median over the d = 0 layer's."""
    turn = {k: 0 for k in layers}

    def call(k):
        r = routings[turn[k] % len(routings)]
        turn[k] += 1
        return timed_pair(layers[k], nxt, x, r, nxt_inputs)

    for k in layers:
        for _ in range(warmup):
            call(k)
    own = {k: [] for k in layers}
    after = {k: [] for k in layers}
    ratios = []
    keys = list(layers)
    for r in range(n_rounds):
        med = {}
        for k in (keys if r % 2 == 0 else keys[::-1]):
            times = [call(k) for _ in range(calls)]
            own[k] += [t for t, _ in times]
            after[k] += [t for _, t in times]
            med[k] = statistics.median(t for t, _ in times)
        ratios.append(med[keys[1]] / med[keys[0]])
    d = keys[1]
    return {"d0_ms": statistics.median(own[0]) * 1e3, "kept_ms": statistics.median(own[d]) * 1e3,
            "deferred_ms": (statistics.median(after[d]) - statistics.median(after[0])) * 1e3,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "calls": len(own[d])}


def timing(shape, methods, ds, tokens, args, emit) -> list[dict]:
    weights = random_expert_weights(shape.E, shape.H, shape.I, seed=0)
    rows = []
    common = dict(num_experts=shape.E, num_experts_per_tok=shape.K, hidden_size=shape.H,
                  moe_intermediate_size=shape.I, cpuinfer_threads=args.threads, chunked_prefill_size=max(tokens))
    nxt = KTMoEWrapper(layer_idx=1, num_experts=1, num_experts_per_tok=1, hidden_size=shape.H,
                       moe_intermediate_size=NEXT_I, cpuinfer_threads=args.threads, method="BF16",
                       chunked_prefill_size=max(tokens))
    nxt.load_weights_from_tensors(*random_expert_weights(1, shape.H, NEXT_I, seed=1))
    for method in methods:
        base = KTMoEWrapper(layer_idx=0, method=method, **common)
        base.load_weights_from_tensors(*weights)
        for d in ds:
            if d == 0 or d >= shape.K:
                continue
            layer = KTMoEWrapper(layer_idx=0, method=method, max_deferred_experts_per_token=d, **common)
            layer.load_weights_from_tensors(*weights)
            for M in tokens:
                x = random_inputs(M, shape.H, shape.E, shape.K, seed=0)[0]
                nxt_inputs = (x, torch.zeros(M, 1, dtype=torch.int64), torch.ones(M, 1))
                r = {"shape": shape.name, "method": method, "d": d, "M": M, "kernel": layer.kernel_name,
                     **rounds({0: base, d: layer}, nxt, x, fresh_routings(shape, M), nxt_inputs,
                              args.rounds, args.round_calls, args.warmup)}
                r["saved_ms"] = r["d0_ms"] - r["kept_ms"]
                rows.append(r)
                emit(r)
            del layer
            gc.collect()
        del base
        gc.collect()
    return rows


# ---- report -------------------------------------------------------------------------------


def accuracy_line(r: dict) -> str:
    return (f"{r['arch']:12s} {r['method']:8s} d={r['d']}  KL mean {r['kl_mean']:.2e}  max {r['kl_max']:.2e}  "
            f"top-1 {r['top1']:.3f}  deferring layers {r['deferring_layers']}")


def timing_line(r: dict) -> str:
    return (f"{r['shape']} {r['method']:8s} d={r['d']} M={r['M']:<4d} d=0 {r['d0_ms']:8.3f} ms  kept {r['kept_ms']:8.3f} ms "
            f"({r['ratio']:.2f}, rounds {r['ratio_min']:.2f}-{r['ratio_max']:.2f})  saved {r['saved_ms']:7.3f} ms  "
            f"deferred job {r['deferred_ms']:7.3f} ms")


def markdown(result: dict) -> str:
    c = result["conditions"]
    lines = [f"`python3 {' '.join(result['command'])}`", "",
             f"{c['cpu']}, {c['threads']} threads; torch {c['torch']}, kt_kernel {c['kt_kernel']}; {c['time']}.", ""]
    if result["accuracy"]:
        lines += ["Accuracy: tiny models in fp32, every MoE layer but the last deferring d experts per token, "
                  f"teacher-forced over {result['accuracy'][0]['positions']} positions against transformers' "
                  "eager experts in fp32 (KL mean in nats; top-1: share of positions whose argmax agrees).", "",
                  "| architecture | method | d | KL mean | KL max | top-1 |", "|---|---|---|---|---|---|"]
        for r in result["accuracy"]:
            lines.append(f"| {r['arch']} (top-{r['top_k']}) | {r['method']} | {r['d']} | {r['kl_mean']:.2e} | "
                         f"{r['kl_max']:.2e} | {r['top1']:.3f} |")
        lines.append("")
    if result["timing"]:
        lines += ["Time per layer: submit to sync of the layer with d = 0, and of the same layer with d (its kept "
                  "experts), median ms over all timed calls; ratio: median over the alternating rounds of kept / "
                  "d = 0 (range of the rounds); deferred job: its time in the background (the next layer's call "
                  "after a d call less after a d = 0 call).", "",
                  "| shape | method | M | d | d = 0 ms | kept ms | ratio (rounds) | saved ms | deferred job ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["timing"]:
            lines.append(f"| {r['shape']} | {r['method']} | {r['M']} | {r['d']} | {r['d0_ms']:.3g} | {r['kept_ms']:.3g} | "
                         f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['saved_ms']:.3g} | "
                         f"{r['deferred_ms']:.3g} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="all", help="tiny-model architectures for the accuracy table (all, none, or "
                                                  "a comma-separated list)")
    p.add_argument("--shape", default="A", help="shape of the timed layer (shapes.py; none skips the timing)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated methods (default {','.join(METHODS)})")
    p.add_argument("--timing-methods", default="AMXINT4,AMXINT8",
                   help="methods timed (default AMXINT4,AMXINT8: two shape-A layers of BF16 need 2.4 GB)")
    p.add_argument("--ds", default=",".join(map(str, DS)), help="deferred experts per token (default 0,1,2)")
    p.add_argument("--tokens", default="1,512", help="tokens per timed call (default 1,512: decode and prefill)")
    p.add_argument("--threads", type=int, default=all_cores(), help="cpuinfer_threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per timed case")
    p.add_argument("--round-calls", type=int, default=5, help="calls per layer and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per layer before the rounds")
    p.add_argument("--json", default=None, help="write the figures and the run's conditions here")
    p.add_argument("--markdown", default=None, metavar="MD", help="write both tables as Markdown here")
    args = p.parse_args(argv)
    from kt_kernel.models import ARCHITECTURES  # needs no transformers

    names = {"all": list(ARCHITECTURES), "none": []}
    args.archs = names.get(args.archs, [a.strip() for a in args.archs.split(",") if a.strip()])
    for a in args.archs:
        if a not in ARCHITECTURES:
            p.error(f"--archs: unknown architecture {a!r}; known: {', '.join(ARCHITECTURES)}")
    for opt in ("methods", "timing_methods"):
        ms = [m.strip() for m in getattr(args, opt).split(",") if m.strip()]
        for m in ms:
            if m not in kt_kernel.METHODS:
                p.error(f"--{opt.replace('_', '-')}: unknown method {m!r}; valid methods: {', '.join(kt_kernel.METHODS)}")
        setattr(args, opt, ms)
    try:
        args.ds = sorted({int(d) for d in args.ds.split(",") if d.strip()})
        args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    except ValueError as e:
        p.error(f"--ds and --tokens take comma-separated integers: {e}")
    if not args.ds or min(args.ds) < 0:
        p.error(f"--ds must be non-negative, got {args.ds}")
    if not args.tokens or min(args.tokens) <= 0:
        p.error(f"--tokens must be positive, got {args.tokens}")
    if args.shape != "none":
        try:
            args.shape = get_shape(args.shape)
        except KeyError as e:
            p.error(str(e))
    require_positive(p, args, "threads", "rounds", "round_calls")
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    info = kt_kernel.cpu_info()
    print(f"CPU: {info['brand']}, {all_cores()} cores, {args.threads} threads")
    acc = accuracy(args.archs, args.methods, args.ds, args.threads, lambda r: print(accuracy_line(r), flush=True))
    times = []
    if args.shape != "none":
        times = timing(args.shape, args.timing_methods, args.ds, args.tokens, args,
                       lambda r: print(timing_line(r), flush=True))
    result = {
        "command": ["benchmarks/bench_deferred.py", *argv],
        "conditions": {"cpu": info["brand"], "threads": args.threads, "rounds": args.rounds,
                       "round_calls": args.round_calls, "warmup": args.warmup, "fresh_routings": FRESH_ROUTINGS,
                       **bench_report.software()},
        "accuracy": acc,
        "timing": times,
    }
    bench_report.write_files(result, args.json, args.markdown, markdown)
    return result


if __name__ == "__main__":
    main()
