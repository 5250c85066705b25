"""Quantize the GPU side of a hybrid MoE model: GPTQ W4A16 / W8A16 on the CPU, in compressed-tensors.

    kt-convert-gpu-weights --model_id Qwen3-30B-A3B/ --output_dir Qwen3-30B-A3B-W4A16/ --quant_type W4A16

The command line over kt_kernel.gpu_convert.convert_gpu_weights; scripts/convert_gpu_weights.py
and the console script kt-convert-gpu-weights run it. A run killed part way resumes when started
again with the same options and --output_dir.
"""
from __future__ import annotations

import argparse
import re
import sys

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _size(text: str) -> int:
    m = _SIZE.match(text)
    unit = m.group(2).upper() if m else None
    if unit and not unit.endswith("B"):
        unit += "B"
    if not m or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 5GB, 500MB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def _bar(enabled: bool):
    """A per-layer progress bar (tqdm when installed, else one line per layer on stderr)."""
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    state = {"layer": None, "bar": None}

    def progress(layer, done, total):
        if state["layer"] != layer:
            if state["bar"] is not None:
                state["bar"].close()
            state["layer"] = layer
            state["bar"] = tqdm(total=total, desc=f"layer {layer}", unit="module", file=sys.stderr) if tqdm else None
            if tqdm is None:
                print(f"layer {layer}: {total} modules and experts", file=sys.stderr)
        if state["bar"] is not None:
            state["bar"].update(1)

    def close():
        if state["bar"] is not None:
            state["bar"].close()
    return progress, close


def main(argv=None) -> int:
    from kt_kernel.gpu_convert.convert import DEFAULT_IGNORE, QUANT_TYPES, GpuQuantSettings, convert_gpu_weights, summary

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_id", required=True, help="Hugging Face checkpoint folder (config.json, safetensors, tokenizer)")
    p.add_argument("--output_dir", required=True, help="new or empty folder (or that of an unfinished run, to resume it)")
    p.add_argument("--quant_type", choices=sorted(QUANT_TYPES), default="W4A16",
                   help="W4A16: 4-bit integer weights; W8A16: 8-bit (activations stay 16-bit on the GPU)")
    p.add_argument("--group_size", type=int, default=None,
                   help="input channels per scale (default 128 for W4A16; W8A16 one scale per output channel); "
                        "0: one scale per output channel")
    p.add_argument("--asymmetric", action="store_true", help="a zero point per group (default: symmetric)")
    p.add_argument("--act_order", action="store_true",
                   help="GPTQ visits the columns by decreasing activation energy (groups stay contiguous: no g_idx)")
    p.add_argument("--dampening", type=float, default=0.01, help="Hessian dampening, a fraction of its mean diagonal")
    p.add_argument("--algorithm", choices=["gptq", "rtn"], default="gptq",
                   help="gptq (default) or rtn: round to nearest without calibration (the baseline; the report still "
                        "measures both on the calibration data)")
    p.add_argument("--ignore", nargs="*", default=[],
                   help=f"more modules left unquantized: exact checkpoint names or 're:' patterns (always: "
                        f"{', '.join(DEFAULT_IGNORE)}, embeddings and norms)")
    p.add_argument("--dataset", default=None,
                   help="calibration text: a .txt file, a .jsonl file (its 'text' fields) or a folder of them; "
                        "default: the corpus built into kt_kernel (nothing is downloaded)")
    p.add_argument("--num_calibration_samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--max_sequence_length", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--min_expert_tokens", type=int, default=16,
                   help="a routed expert that receives fewer calibration tokens is calibrated on all of its layer's "
                        "tokens (reported per expert; default 16)")
    p.add_argument("--max_shard_size", type=_size, default=_size("5GB"), help="largest output file (default 5GB)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    a = p.parse_args(argv)
    progress, close = _bar(not a.no_progress)
    try:
        s = GpuQuantSettings(quant_type=a.quant_type, group_size=a.group_size, symmetric=not a.asymmetric,
                             act_order=a.act_order, damp=a.dampening, algorithm=a.algorithm, ignore=tuple(a.ignore),
                             num_samples=a.num_calibration_samples, max_length=a.max_sequence_length,
                             min_expert_tokens=a.min_expert_tokens, dataset=a.dataset, max_shard_size=a.max_shard_size)
        report = convert_gpu_weights(a.model_id, a.output_dir, s, threads=a.threads, progress=progress)
    except (ValueError, OSError) as e:  # CheckpointError, UnsupportedModelError are ValueErrors
        close()
        print(f"convert_gpu_weights: error: {e}", file=sys.stderr)
        return 2
    close()
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
