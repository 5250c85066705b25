"""The hybrid recipe end to end on the tiny reference models: the GPU side quantized by
convert_gpu_weights (GPTQ, and round-to-nearest as the baseline), the CPU experts by
convert_cpu_weights, run together through the transformers integration (load_hybrid_model) and
compared with the fp32 model on the reference prompt. Prints the README's "Hybrid: quantize both
sides" table: per architecture and GPU-side algorithm, GPTQ's output error over RTN's per kind of
weight (on the calibration inputs), and the model's KL and top-1 against fp32.

    python3 benchmarks/hybrid_recipe.py [--archs qwen3_moe,deepseek_v3,mixtral] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def run(arch: str, root: Path, samples: int, length: int, gpu_experts: int) -> list:
    from kt_kernel.convert import convert_checkpoint
    from kt_kernel.gpu_convert import GpuQuantSettings, convert_gpu_weights
    from kt_kernel.integrations.transformers import load_hybrid_model, load_model, load_reference
    from kt_kernel.models import PrintableTokenizer, build_tiny_model, logit_agreement, teacher_forced_logits
    from kt_kernel.models.compare import REFERENCE_PROMPT

    src = build_tiny_model(arch, root / arch, seed=0)
    ids = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    rows = []
    with torch.no_grad():
        ref = teacher_forced_logits(load_reference(src), ids)
        cpu = root / f"{arch}-cpu-int4"
        convert_checkpoint(src, cpu, "int4", progress=False)
        cpu_only = logit_agreement(teacher_forced_logits(load_model(src, "AMXINT4", dtype=torch.float32), ids), ref)
        rows.append({"arch": arch, "gpu side": "bf16 (not quantized)", "cpu side": "AMXINT4",
                     "kl_mean": cpu_only.kl_mean, "top1": cpu_only.top1})
        for alg in ("rtn", "gptq"):
            gpu = root / f"{arch}-gpu-{alg}"
            t0 = time.perf_counter()
            report = convert_gpu_weights(src, gpu, GpuQuantSettings(group_size=32, num_samples=samples,
                                                                    max_length=length, algorithm=alg))
            seconds = time.perf_counter() - t0
            kinds = {}
            for r in report["rows"]:
                k = kinds.setdefault(r["kind"], [0.0, 0.0])
                k[0] += r["error"]
                k[1] += r["rtn_error"]
            model = load_hybrid_model(gpu, cpu, "AMXINT4", num_gpu_experts=gpu_experts, dtype=torch.float32)
            a = logit_agreement(teacher_forced_logits(model, ids), ref)
            rows.append({"arch": arch, "gpu side": f"W4A16 g32 {alg.upper()}", "cpu side": "AMXINT4",
                         "kl_mean": a.kl_mean, "top1": a.top1, "seconds": seconds,
                         "error_vs_rtn": {k: e / r for k, (e, r) in kinds.items()}})
    return rows


def markdown(rows: list) -> str:
    kinds = sorted({k for r in rows for k in r.get("error_vs_rtn", {})})
    out = ["| model | GPU side | CPU experts | KL vs fp32 | top-1 | " + " | ".join(f"{k} error / RTN" for k in kinds) + " |",
           "|---|---|---|---|---|" + "---|" * len(kinds)]
    for r in rows:
        errs = [f"{r['error_vs_rtn'][k]:.3f}" if k in r.get("error_vs_rtn", {}) else "" for k in kinds]
        out.append(f"| {r['arch']} | {r['gpu side']} | {r['cpu side']} | {r['kl_mean']:.2e} | {r['top1']:.3f} | "
                   + " | ".join(errs) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="qwen3_moe,deepseek_v3,mixtral")
    p.add_argument("--samples", type=int, default=16, help="calibration windows (default 16)")
    p.add_argument("--length", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--gpu-experts", type=int, default=4, help="experts per MoE layer on the GPU side (default 4)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from kt_kernel.threads import torch_threads

    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        for arch in a.archs.split(","):
            rows += run(arch, Path(tmp), a.samples, a.length, a.gpu_experts)
    print(markdown(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
