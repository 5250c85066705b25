"""The README's table of GGUF types: per type, its bits per weight, the ISA tiers with kernels of
its own, and two measured errors of a MoE layer (kt_kernel.random_moe: E 8, H = I = 512, top-2,
M = 64, the active tier):

  kernels   ||out - ref|| / ||ref|| against a float64 layer on gguf's dequantization of the same
            blocks: what the kernels add (their q8 activations, fp32 sums, the bf16 output);
  vs fp32   the same against the fp32 layer on the original weights, the blocks from kt_kernel's
            quantizer: what a user of the type sees (the quantization itself dominates).

    python3 benchmarks/gguf_types.py            # about a minute on 2 cores
"""
from __future__ import annotations

import argparse

import gguf
import numpy as np
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.accuracy import relative_error
from kt_kernel.formats import GGUF_METHOD, gguf_formats
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.threads import all_cores
from kt_kernel.torch_moe import moe_forward

E, H, I, K, M = 8, 512, 512, 2, 64
TIER_ORDER = ["avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"]


def _blocks(fmt: str, w: torch.Tensor) -> np.ndarray:
    """[E, N, K] fp32 -> the GGUF tensor's bytes [E, N, row_bytes] (kt_kernel's quantizer)."""
    out = []
    for e in range(w.shape[0]):
        q = _ext.quantize(fmt, w[e].numpy())
        a = q["blocks"] if "blocks" in q else q["values"]
        out.append(np.ascontiguousarray(a).view(np.uint8).reshape(w.shape[1], -1))
    return np.stack(out)


def measure(fmt: dict) -> dict:
    name, ggml = fmt["name"], gguf.GGMLQuantizationType(fmt["gguf_type"])
    gate, up, down = random_expert_weights(E, H, I, seed=11, dtype=torch.float32)
    stored = [_blocks(name, w) for w in (gate, up, down)]
    deq = [torch.from_numpy(np.stack([gguf.quants.dequantize(b, ggml) for b in s]).astype(np.float64))
           for s in stored]
    layer = _ext.MoeLayer(_ext.Engine.shared(all_cores(), 1), E, K, H, I, GGUF_METHOD, [1] * E, 512,
                          formats=[name, name])
    pmap = torch.arange(E, dtype=torch.int64)
    layer.load_quantized([[s.ctypes.data] for s in stored], pmap.data_ptr(), E)
    x, ids, w = random_inputs(M, H, E, K, seed=12)
    job, out = layer.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), True, w.data_ptr(), "float32", M)
    job.wait()
    out = torch.from_numpy(out.view(np.int16).copy()).view(torch.bfloat16)
    ref_deq = moe_forward(x.double(), ids, w.double(), *deq, out_dtype=torch.float64)
    ref_fp32 = moe_forward(x.float(), ids, w, gate, up, down, out_dtype=torch.float32)
    tiers = sorted({r["tier"] for r in _ext.kernel_table() if r["format"] == name and r["tier"] != "generic"},
                   key=TIER_ORDER.index)
    return {"type": ggml.name, "format": name, "bits": fmt["bits_per_weight"], "tiers": tiers,
            "kernels": relative_error(out, ref_deq), "vs_fp32": relative_error(out, ref_fp32),
            "kernel": layer.kernel_name}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", default=None, help="comma-separated kt format names (default: every GGUF type)")
    args = p.parse_args(argv)
    formats = [f for f in gguf_formats() if args.types is None or f["name"] in args.types.split(",")]
    info = kt_kernel.cpu_info()
    print(f"{info['brand']}, tier `{info['active_tier']}`; shape E {E}, H {H}, I {I}, top-{K}, M {M}; "
          "`python3 benchmarks/gguf_types.py`\n")
    print("| GGUF type | bits/weight | kernels beyond the generic tier | error: kernels | error: vs fp32 |")
    print("|---|---|---|---|---|")
    for f in formats:
        r = measure(f)
        tiers = ", ".join(f"`{t}`" for t in r["tiers"]) or "generic only"
        print(f"| {r['type']} | {r['bits']:.4g} | {tiers} | {r['kernels']:.4f} | {r['vs_fp32']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
