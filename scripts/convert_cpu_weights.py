#!/usr/bin/env python3
"""Convert a Hugging Face MoE checkpoint into kt_kernel's quantized CPU expert files.

    python scripts/convert_cpu_weights.py --input-path DeepSeek-V3/ --input-type fp8 \
        --output DeepSeek-V3-kt-int4/ --quant-method int4 --threads 32 [--resume]

Thin entry point over kt_kernel.convert.cli (also installed as kt-convert-cpu-weights).
"""
import sys

from kt_kernel.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
