"""Run one random MoE layer through KTMoEWrapper and check it: ``python -m kt_kernel.demo layer``.

Needs no files. Builds a random layer (default: the shape of Qwen3-30B-A3B), loads it into a
KTMoEWrapper, and prints the CPU and the kernel chosen, the output error against an fp32 torch
reference on the same weights, decode (M = 1) and prefill (M = --tokens) tokens/s, the same
figures for the plain-PyTorch bf16 layer, and PASS or FAIL from the error.
"""
from __future__ import annotations

import argparse
import sys

import torch

import kt_kernel
from kt_kernel import KTMoEWrapper
from kt_kernel.accuracy import REL_ERR_BOUNDS, relative_error
from kt_kernel.isa_option import add_isa_argument, apply_isa_argument
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.timing import Stopwatch, step, time_calls
from kt_kernel.torch_moe import TORCH_PEER, moe_forward


def median_seconds(fn, calls: int, budget: float) -> float:
    """Median time of fn over `calls` calls after one warm-up, or fewer (at least 3) once `budget`
    seconds are spent: a busy machine must not stretch the demo."""
    return time_calls(fn, calls, max_seconds=budget, warmup=1).median


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="kt-kernel-demo layer",
        description="Run one random MoE layer (no files needed) through KTMoEWrapper: CPU and kernel used, "
                    "error against an fp32 torch reference, decode and prefill tokens/s beside plain torch, "
                    "PASS or FAIL.")
    p.add_argument("--hidden", type=int, default=2048, help="hidden size H (default 2048, Qwen3-30B-A3B)")
    p.add_argument("--intermediate", type=int, default=768, help="expert intermediate size I (default 768)")
    p.add_argument("--experts", type=int, default=128, help="experts E (default 128)")
    p.add_argument("--topk", type=int, default=8, help="experts per token K (default 8)")
    p.add_argument("--method", default="AMXINT4", choices=list(kt_kernel.METHODS), help="weight format (default AMXINT4)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for kt_kernel and torch (default: all cores)")
    p.add_argument("--tokens", type=int, default=256, help="tokens per prefill call (default 256)")
    p.add_argument("--gpu-experts", type=int, default=0,
                   help="mark the first N experts as GPU experts: the CPU layer skips them (default 0)")
    add_isa_argument(p)
    args = p.parse_args(argv)
    for name in ("hidden", "intermediate", "experts", "topk", "tokens"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.topk > args.experts:
        p.error(f"--topk {args.topk} exceeds --experts {args.experts}")
    if not 0 <= args.gpu_experts <= args.experts:
        p.error(f"--gpu-experts {args.gpu_experts} must be in 0..{args.experts}")
    if args.threads is not None and args.threads <= 0:
        p.error(f"--threads must be positive, got {args.threads}")
    apply_isa_argument(p, args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    clock = Stopwatch()
    H, I, E, K, M = args.hidden, args.intermediate, args.experts, args.topk, args.tokens
    # The wrapper picks "all cores" when --threads is not given; torch then uses as many.
    wrapper = KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=K, hidden_size=H,
                           moe_intermediate_size=I, num_gpu_experts=args.gpu_experts,
                           cpuinfer_threads=args.threads, threadpool_count=1, method=args.method)
    threads = wrapper.cpuinfer_threads
    torch.set_num_threads(threads)

    info = kt_kernel.cpu_info()
    print(f"kt_kernel {kt_kernel.__version__} demo: one random MoE layer on the CPU")
    print(f"CPU: {info['brand']} ({info['vendor']}); best tier {info['best_tier']}; "
          f"AMX: {info['amx']}")
    print(f"layer: H={H} I={I} E={E} K={K}, {args.gpu_experts} GPU experts; method {args.method}; "
          f"{threads} threads")

    with step(f"making random bf16 weights ({3 * E * H * I * 2 / 1e9:.2f} GB)"):
        gate, up, down = random_expert_weights(E, H, I, seed=0)
    with step(f"loading weights into KTMoEWrapper ({args.method})"):
        wrapper.load_weights_from_tensors(gate, up, down)
    print(f"  tier used: {wrapper.isa_tier}; kernel: {wrapper.kernel_description}; "
          f"{wrapper.weight_bytes / 1e9:.2f} GB packed")

    # The CPU layer computes the experts it owns; the references skip the GPU experts the same way.
    inputs = {}
    for m in sorted({1, M}):
        x, ids, w = random_inputs(m, H, E, K, seed=0)
        inputs[m] = (x, ids, w, ids.masked_fill(ids < args.gpu_experts, -1))

    with step(f"fp32 reference and torch bf16 layer, M={M}"):
        x, ids, w, cpu_ids = inputs[M]
        ref = moe_forward(x, cpu_ids, w, gate, up, down, compute_dtype=torch.float32, out_dtype=torch.float32)
        err_torch = relative_error(moe_forward(x, cpu_ids, w, gate, up, down), ref)
        err_kt = relative_error(wrapper.forward(x, ids, w), ref)

    timings = {}
    with step("timing decode (M=1) and prefill"):
        for m, calls, budget in ((1, 30, 1.0), (M, 5, 2.0)):
            x, ids, w, cpu_ids = inputs[m]
            timings[args.method, m] = median_seconds(lambda: wrapper.forward(x, ids, w), calls, budget)
            timings[TORCH_PEER, m] = median_seconds(lambda: moe_forward(x, cpu_ids, w, gate, up, down), calls, budget)

    print(f"\n  {'':12s} {'rel err':>9s} {'decode tok/s':>13s} {'prefill tok/s':>14s}   (M=1 and M={M}, medians)")
    for name, err in ((args.method, err_kt), (TORCH_PEER, err_torch)):
        print(f"  {name:12s} {err:9.4f} {1 / timings[name, 1]:13.1f} {M / timings[name, M]:14.1f}")
    print(f"  speed-up over torch bf16: decode {timings[TORCH_PEER, 1] / timings[args.method, 1]:.2f}x, "
          f"prefill {timings[TORCH_PEER, M] / timings[args.method, M]:.2f}x")

    bound = REL_ERR_BOUNDS[args.method]
    ok = err_kt < bound
    print(f"\n{'PASS' if ok else 'FAIL'}: {args.method} relative error {err_kt:.4f} "
          f"{'<' if ok else '>='} bound {bound} against the fp32 reference "
          f"({clock.seconds:.0f} s in all)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
