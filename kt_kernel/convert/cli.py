"""Convert a Hugging Face MoE checkpoint into kt_kernel's quantized CPU expert files.

    kt-convert-cpu-weights --input-path DeepSeek-V3/ --input-type fp8 \
        --output DeepSeek-V3-kt-int4/ --quant-method int4 --threads 32 [--resume]

The command line over kt_kernel.convert.convert_checkpoint; scripts/convert_cpu_weights.py and the
console script kt-convert-cpu-weights run it (format: docs/design.md, "The converted folder").
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kt_kernel.convert import QUANT_METHODS, ConversionError, convert_checkpoint
    from kt_kernel.formats import formats as method_formats

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input-path", required=True, help="HF checkpoint folder: config.json, safetensors, index")
    p.add_argument("--input-type", choices=["bf16", "fp16", "fp32", "fp8", "rawint4", "mxfp4"], default=None,
                   help="what the experts are (checked; default: read from the checkpoint): a float dtype, fp8 "
                        "(e4m3 with block scales), rawint4 (a compressed-tensors or AutoGPTQ int4 release: Kimi-K2-Thinking, "
                        "*-GPTQ-Int4), mxfp4 (a gpt-oss release: its expert biases are kept beside the weights)")
    p.add_argument("--output", required=True, help="output folder (new or empty, or the one to --resume)")
    p.add_argument("--quant-method", choices=sorted(QUANT_METHODS), default="int4",
                   help="; ".join(f"{f['quant_method']}: {f['method']} ({f['name']}, {f['bits_per_weight']:g} bits "
                                  "per weight)" for f in method_formats()))
    p.add_argument("--threads", type=int, default=None, help="quantizer threads (default: all allowed cores)")
    p.add_argument("--max-shard-gb", type=float, default=4.0,
                   help="largest file of copied non-expert tensors, GB (default 4; a larger tensor gets its own)")
    p.add_argument("--resume", action="store_true",
                   help="continue in --output, keeping the layers that verify (checksums included), rewriting the rest")
    p.add_argument("--overwrite", action="store_true",
                   help="convert into an --output that holds another conversion (method, geometry or source), "
                        "replacing its files (files the converter did not write are kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    a = p.parse_args(argv)
    try:
        rec = convert_checkpoint(a.input_path, a.output, a.quant_method, input_type=a.input_type,
                                 threads=a.threads, resume=a.resume, overwrite=a.overwrite,
                                 progress=not a.no_progress,
                                 shard_bytes=int(a.max_shard_gb * 1e9))
    except (ConversionError, OSError) as e:  # OSError: an input file unreadable (output errors are ConversionErrors)
        print(f"convert_cpu_weights: error: {e}", file=sys.stderr)
        return 2
    st = rec["_stats"]
    gbps = st["source_bytes_converted"] / max(st["seconds"], 1e-9) / 1e9
    print(f"converted {len(rec['moe_layers'])} MoE layers ({rec['method']}) into {a.output}: "
          f"{st['source_bytes_converted'] / 1e9:.3f} GB of source experts in {st['seconds']:.1f} s ({gbps:.2f} GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
