"""Converting and loading expert weights: throughput, peak memory and load time.

    python benchmarks/bench_convert.py --shape A --layers 3 --methods int4,int8,bf16 --threads 2

Builds (once, in --workdir) a synthetic Hugging Face checkpoint of --layers MoE layers of a
protocol shape (per-expert bf16 keys, DeepSeek-style config, one shard per layer; --input-type fp8
stores e4m3 with 128 x 128 block scales instead), then per method, each step in a fresh subprocess
so that its peak RSS (VmHWM, reset just before the step) is its own:
  - convert: kt-convert-cpu-weights' convert_checkpoint; GB/s of source expert bytes, and the peak
    RSS growth beside one layer of source experts and one layer of output;
  - load: KTMoEWrapper.load_weights of one converted layer, all experts on the CPU; time, and the
    peak RSS growth beside the packed size; again with KT_KERNEL_VERIFY_WEIGHTS=0 (no checksums);
  - verify: the checksum verification alone (kt_kernel.checkpoint.integrity.verify_experts) over
    every expert of the layer file, file in the page cache, best of 3: seconds per GB;
  - cpu_save: load_weights straight from the HF checkpoint with cpu_save (quantize, save, load),
    then the same call again in a new process, which loads the saved layer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from kt_kernel.convert import QUANT_METHODS as METHODS, quantize_fp8  # converter name -> method
from kt_kernel.timing import Stopwatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import get_shape  # noqa: E402

FP8_BLOCK = 128

_PEAK = textwrap.dedent("""
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                  # VmHWM (peak RSS) := current RSS
        return status("VmRSS")
""")

_CONVERT = _PEAK + textwrap.dedent("""
    import json, sys
    from kt_kernel.convert import convert_checkpoint, open_hf_checkpoint
    src = open_hf_checkpoint(sys.argv[1])
    base = reset_peak()
    rec = convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], threads=int(sys.argv[4]), progress=False)
    print(json.dumps({"grew": status("VmHWM") - base, "seconds": rec["_stats"]["seconds"],
                      "source_bytes": rec["_stats"]["source_bytes_converted"],
                      "src_layer": src.layer_bytes(src.moe_layers[0]),
                      "out_layer": max(v["bytes"] for v in rec["files"].values())}))
""")

_LOAD = _PEAK + textwrap.dedent("""
    import json, sys
    from kt_kernel import KTMoEWrapper
    from kt_kernel.timing import Stopwatch
    cfg = json.loads(sys.argv[3])
    save = sys.argv[4] if len(sys.argv) > 4 else False
    w = KTMoEWrapper(layer_idx=cfg["layer"], num_experts=cfg["E"], num_experts_per_tok=cfg["K"], hidden_size=cfg["H"],
                     moe_intermediate_size=cfg["I"], cpuinfer_threads=cfg["threads"], weight_path=sys.argv[1],
                     method=sys.argv[2], cpu_save=save)
    base = reset_peak()
    clock = Stopwatch()
    w.load_weights()
    seconds = clock.seconds
    print(json.dumps({"grew": status("VmHWM") - base, "seconds": seconds, "packed": w.weight_bytes}))
""")

_VERIFY = textwrap.dedent("""
    import json, sys
    from kt_kernel.checkpoint.integrity import verify_experts
    from kt_kernel.checkpoint.safetensors_io import read_header
    from kt_kernel.timing import Stopwatch
    h = read_header(sys.argv[1])
    E = int(h.metadata["num_experts"])
    times = []
    for _ in range(3):
        clock = Stopwatch()
        verify_experts(h, list(h.tensors), None, E)
        times.append(clock.seconds)
    print(json.dumps({"seconds": min(times), "bytes": sum(h.nbytes(k) for k in h.tensors)}))
""")


def build_checkpoint(path: Path, H: int, I: int, E: int, K: int, layers: int, input_type: str) -> Path:
    """A DeepSeek-style checkpoint: layer 0 dense, layers 1..layers MoE, one shard per layer."""
    if (path / "model.safetensors.index.json").exists():
        return path
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v3", "hidden_size": H, "moe_intermediate_size": I, "intermediate_size": 4 * I,
           "n_routed_experts": E, "num_experts_per_tok": K, "num_hidden_layers": layers + 1,
           "first_k_dense_replace": 1, "vocab_size": 1024}
    if input_type == "fp8":
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [FP8_BLOCK] * 2}
    (path / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    weight_map = {}
    for layer in range(layers + 1):
        shard = {f"model.layers.{layer}.input_layernorm.weight": torch.ones(H, dtype=torch.bfloat16)}
        if layer == 0:
            shard["model.embed_tokens.weight"] = torch.randn(1024, H, generator=g).to(torch.bfloat16)
        else:
            for e in range(E):
                for name, (n, k) in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                    key = f"model.layers.{layer}.mlp.experts.{e}.{name}.weight"
                    w = torch.randn(n, k, generator=g) * k ** -0.5
                    if input_type == "fp8":
                        shard[key], shard[key + "_scale_inv"] = quantize_fp8(w, (FP8_BLOCK, FP8_BLOCK))
                    else:
                        shard[key] = w.to(torch.bfloat16)
        name = f"model-{layer + 1:05d}-of-{layers + 1:05d}.safetensors"
        save_file(shard, str(path / name))
        weight_map.update({k: name for k in shard})
        del shard
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def _run(code: str, *args, env=None) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       env=None if env is None else dict(os.environ, **env))
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="A", help="protocol shape from shapes.py (A, B, C; S is small)")
    p.add_argument("--layers", type=int, default=3, help="MoE layers in the synthetic checkpoint")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=None, help="converter and engine threads (default: all cores)")
    p.add_argument("--input-type", choices=["bf16", "fp8"], default="bf16")
    p.add_argument("--workdir", default="/tmp/kt_bench_convert", help="where the checkpoint and outputs go")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    threads = a.threads or len(os.sched_getaffinity(0))
    shape = get_shape(a.shape)
    work = Path(a.workdir)
    clock = Stopwatch()
    src = build_checkpoint(work / f"src-{shape.name}-{a.layers}-{a.input_type}", shape.H, shape.I, shape.E, shape.K,
                           a.layers, a.input_type)
    print(f"checkpoint {src} ready in {clock.seconds:.1f} s; shape {shape.name} (H={shape.H}, I={shape.I}, "
          f"E={shape.E}), {a.layers} MoE layers, {a.input_type}, {threads} threads")
    rows = []
    cfg = json.dumps({"layer": 1, "E": shape.E, "K": shape.K, "H": shape.H, "I": shape.I, "threads": threads})
    for m in a.methods.split(","):
        out = work / f"out-{m}"
        shutil.rmtree(out, ignore_errors=True)
        conv = _run(_CONVERT, src, out, m, threads)
        load = _run(_LOAD, out, METHODS[m], cfg)
        unverified = _run(_LOAD, out, METHODS[m], cfg, env={"KT_KERNEL_VERIFY_WEIGHTS": "0"})
        verify = _run(_VERIFY, out / "kt-experts-L0001.safetensors")
        save = work / f"save-{m}"
        shutil.rmtree(save, ignore_errors=True)
        first = _run(_LOAD, src, METHODS[m], cfg, save)
        again = _run(_LOAD, src, METHODS[m], cfg, save)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(save, ignore_errors=True)
        rows.append({"method": m, "convert": conv, "load": load, "load_unverified": unverified, "verify": verify,
                     "cpu_save_first": first, "cpu_save_again": again})
    print("| method | convert GB/s | convert peak RSS growth | one source layer + one output layer | load one layer "
          "| load unverified | verify alone | load peak RSS / packed | cpu_save first load | cpu_save next load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c, ld = r["convert"], r["load"]
        print(f"| {r['method']} | {c['source_bytes'] / c['seconds'] / 1e9:.2f} | {c['grew'] / 1e6:.0f} MB | "
              f"{c['src_layer'] / 1e6:.0f} MB + {c['out_layer'] / 1e6:.0f} MB | {ld['seconds'] * 1e3:.0f} ms "
              f"({ld['packed'] / ld['seconds'] / 1e9:.2f} GB/s) | {r['load_unverified']['seconds'] * 1e3:.0f} ms | "
              f"{r['verify']['seconds'] / r['verify']['bytes'] * 1e9:.3f} s/GB | {ld['grew'] / ld['packed']:.2f} | "
              f"{r['cpu_save_first']['seconds']:.2f} s | {r['cpu_save_again']['seconds'] * 1e3:.0f} ms |")
    result = {"shape": shape.name, "layers": a.layers, "input_type": a.input_type, "threads": threads, "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
