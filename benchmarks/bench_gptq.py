"""convert_gpu_weights at scale: peak RSS and time per decoder layer on a checkpoint of a real
model's shape (random weights, a few layers), and the projection to DeepSeek-V3 (671B) from one
of its experts and its largest attention weight quantized here at their real shapes.

    python3 benchmarks/bench_gptq.py --shape qwen3-30b-a3b --layers 2 [--samples 128 --length 512]
    python3 benchmarks/bench_gptq.py --project-only

Part 1 writes the checkpoint (bf16, the printable tokenizer of the tiny models, so that any text
calibrates it) to a temporary folder and runs `kt-convert-gpu-weights` on it in a child process,
whose peak RSS (getrusage of the child) and per-layer times (its report) are printed. Part 2 times
GPTQ on one DeepSeek-V3 routed expert (gate and up stacked [4096, 7168], down [7168, 2048]) with
the tokens an expert receives on average at the given calibration size (samples x length x top-8 /
256), the factorization of the Hessian of its widest attention input (o_proj, K = 16384) at a
quarter scale (K = 4096, cost ~ K^3) and the calibration forwards at the fp32 GEMM rate measured
here, and adds them up over the 58 MoE layers. Resident memory
at DeepSeek-V3's shape follows from what one layer holds (convert.py's docstring).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    # Qwen3-30B-A3B: 48 layers of 128 experts, top-8
    "qwen3-30b-a3b": dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                          intermediate_size=6144, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8),
}
REAL_LAYERS = {"qwen3-30b-a3b": 48}
# DeepSeek-V3 / R1 / V3.1 (671B): hidden 7168, 256 routed experts of intermediate 2048, top-8, 3 dense
# + 58 MoE layers, one shared expert, MLA (q_lora 1536, kv_lora 512, 128 heads, o_proj input 16384)
DSV3 = dict(H=7168, I=2048, E=256, top_k=8, moe_layers=58, dense_layers=3, dense_I=18432, o_in=16384,
            vocab=129280)


def run_converter(shape: str, layers: int, samples: int, length: int, threads) -> dict:
    from kt_kernel.models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = build_tiny_model("qwen3_moe", Path(tmp) / "src", num_hidden_layers=layers, **SHAPES[shape])
        built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "kt_kernel.gpu_convert.cli", "--model_id", str(src), "--output_dir", str(out),
               "--num_calibration_samples", str(samples), "--max_sequence_length", str(length), "--no-progress"]
        if threads:
            cmd += ["--threads", str(threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report = json.loads((out / "kt_gptq_report.json").read_text())
        out_size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    per_layer = report["seconds_per_layer"]
    return {"shape": shape, "layers": layers, "samples": samples, "length": length, "build_s": built,
            "source_gb": size / 1e9, "output_gb": out_size / 1e9, "wall_s": wall, "seconds_per_layer": per_layer,
            "peak_rss_gb": max(peak, before) * 1024 / 1e9, "summary": r.stdout.strip(),
            "projected_full_model_h": (wall - sum(per_layer) + sum(per_layer) / layers * REAL_LAYERS[shape]) / 3600}


def project_deepseek(samples: int, length: int) -> dict:
    from kt_kernel.gpu_convert import gptq_quantize, hessian, layer_error, rtn_quantize

    d = DSV3
    tokens = max(16, samples * length * d["top_k"] // d["E"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, d["H"], generator=g)
    t0 = time.perf_counter()
    h = hessian(x)
    w = torch.randn(2 * d["I"], d["H"], generator=g) / d["H"] ** 0.5
    q = gptq_quantize(w, h, 4, 128, True, scale_dtype=torch.bfloat16)
    layer_error(w, q.dequantize(), h), layer_error(w, rtn_quantize(w, 4, 128).dequantize(), h)
    xm = torch.randn(tokens, d["I"], generator=g)
    hm = hessian(xm)
    wd = torch.randn(d["H"], d["I"], generator=g) / d["I"] ** 0.5
    qd = gptq_quantize(wd, hm, 4, 128, True, scale_dtype=torch.bfloat16)
    layer_error(wd, qd.dequantize(), hm), layer_error(wd, rtn_quantize(wd, 4, 128).dequantize(), hm)
    expert_s = time.perf_counter() - t0
    K = 4096
    a = torch.randn(K, K, dtype=torch.float64, generator=g)
    a = a @ a.T + K * torch.eye(K, dtype=torch.float64)
    t0 = time.perf_counter()
    torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(a)), upper=True)
    factor_4096 = time.perf_counter() - t0
    o_proj_factor = factor_4096 * (d["o_in"] / K) ** 3
    # the calibration forwards (twice per layer: to calibrate, then to feed the next layer), in torch
    # fp32: every token through its top-8 experts and the shared one, at the GEMM rate measured here
    m = torch.randn(2048, d["H"], generator=g)
    wf = torch.randn(d["I"], d["H"], generator=g)
    t0 = time.perf_counter()
    for _ in range(3):
        m @ wf.T
    gflops = 3 * 2 * 2048 * d["H"] * d["I"] / (time.perf_counter() - t0) / 1e9
    forward_s = 2 * samples * length * (d["top_k"] + 1) * 3 * 2 * d["H"] * d["I"] / (gflops * 1e9)
    per_layer = expert_s * (d["E"] + 1) + o_proj_factor * 1.5 + forward_s  # other attention inputs: K <= 7168
    # resident at DeepSeek-V3's shape: one MoE layer fp32, the hidden states (in, out, MoE input) fp32,
    # the largest Hessian (o_proj, fp64) and its factor
    layer_params = 3 * d["E"] * d["H"] * d["I"] + 3 * d["H"] * d["I"] + 200e6  # routed + shared + attention
    resident = 4 * layer_params + 3 * 4 * samples * length * d["H"] + 3 * 8 * d["o_in"] ** 2
    return {"tokens_per_expert": tokens, "expert_s": expert_s, "factor_4096_s": factor_4096,
            "o_proj_factor_s": o_proj_factor, "fp32_gemm_gflops": gflops, "forward_s": forward_s,
            "moe_layer_s": per_layer,
            "core_hours_2_threads": per_layer * d["moe_layers"] / 3600, "resident_gb": resident / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-30b-a3b")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--project-only", action="store_true", help="only part 2 (DeepSeek-V3's projection)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    res = {"torch_threads": torch.get_num_threads()}
    if not a.project_only:
        res["run"] = r = run_converter(a.shape, a.layers, a.samples, a.length, a.threads)
        print(f"{a.shape}, {a.layers} layers ({r['source_gb']:.2f} GB bf16 -> {r['output_gb']:.2f} GB), "
              f"{a.samples} x {a.length} calibration tokens: {r['wall_s']:.0f} s, per layer "
              f"{', '.join(f'{s:.0f}' for s in r['seconds_per_layer'])} s, peak RSS {r['peak_rss_gb']:.2f} GB; "
              f"{REAL_LAYERS[a.shape]} layers: about {r['projected_full_model_h']:.1f} h")
        print(r["summary"])
    res["deepseek_v3"] = d = project_deepseek(a.samples, a.length)
    print(f"DeepSeek-V3 projection ({a.samples} x {a.length} calibration tokens, {d['tokens_per_expert']} per expert "
          f"on average): one expert {d['expert_s']:.1f} s, o_proj's factorization {d['o_proj_factor_s']:.0f} s "
          f"(K = 4096: {d['factor_4096_s']:.1f} s), the calibration forwards {d['forward_s']:.0f} s "
          f"({d['fp32_gemm_gflops']:.0f} GFLOP/s fp32), an MoE layer {d['moe_layer_s'] / 60:.0f} min, 58 MoE layers "
          f"{d['core_hours_2_threads']:.0f} h on {res['torch_threads']} threads; resident about "
          f"{d['resident_gb']:.0f} GB")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
