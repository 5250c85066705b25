#!/usr/bin/env python3
"""Quantize the GPU side of a hybrid MoE model (GPTQ W4A16 / W8A16, compressed-tensors) on the CPU.

    python scripts/convert_gpu_weights.py --model_id Qwen3-30B-A3B/ --output_dir Qwen3-30B-A3B-W4A16/ \
        --quant_type W4A16 [--dataset texts.jsonl] [--threads 32]

Thin entry point over kt_kernel.gpu_convert.cli (also installed as kt-convert-gpu-weights).
"""
import sys

from kt_kernel.gpu_convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
