"""One MoE layer of GGUF experts, benchmarked per docs/benchmark_protocol.md: kt_kernel's LLAMAFILE
method beside upstream kt-kernel 0.7.2's and the PyTorch bf16 peer, all on the same GGUF file.

    python benchmarks/bench_gguf.py --shapes A --types q4_K,q5_K,q6_K,q8_0,iq4_xs --tokens 1,8,64,512 \\
        --upstream-python /work/wt/upstream-venv/bin/python --json gguf.json --markdown gguf.md

Per shape and type, one GGUF file written with gguf.GGUFWriter (architecture qwen3moe, its expert
metadata, block 0's ffn_gate_exps / ffn_up_exps / ffn_down_exps tensors in the type): the blocks of
kt_kernel's quantizer (_ext.quantize) of Gaussian weights (seed 0; std 0.02 for gate and up, 0.03
for down, the scale of real models, whose small block scales include fp16 subnormals; each
expert's rows drawn from a pool of --pool-rows quantized rows) where kt_kernel has the type, else
random valid blocks of that std (tests/gguf_reference.py).
--types fp8 stands for an FP8 release instead (write_fp8_checkpoint: a folder in DeepSeek-V3's
layout, e4m3 experts with fp32 scales per 128 x 128 block, torch's float8 rounding of the same
Gaussian weights), run with method FP8 by ours and upstream, its reference on torch's decoding;
--types rawint4 for a compressed-tensors int4 release (write_int4_checkpoint: Kimi-K2-Thinking's
scheme, symmetric groups of 32 with bf16 scales, written by compressed-tensors' compressor), run
with method RAWINT4, its reference on the file's scale * (q - 8); --types gptq for an AutoGPTQ int4
release (write_gptq_checkpoint: the *-GPTQ-Int4 scheme, symmetric groups of 128 with fp16 scales),
run with method GPTQ_INT4, its reference on the file's scale * (q - zero point); --types mxfp4 for a gpt-oss MXFP4
release (write_mxfp4_checkpoint: kt_kernel's mxfp4 quantizer in gpt-oss's fused layout, zero
biases, plain SwiGLU; upstream's copy of the same blocks in DeepSeek-V4-Flash's per-expert layout,
the layout upstream's MXFP4 reads), run with method MXFP4, its reference on the e2m1 values times
2^(s - 127). (mxfp4 here is the release, not the GGUF block type of that name.)
Then each side runs alone in its own process (gguf_side.py), one after the other:
  ours      KTMoEWrapper(method="LLAMAFILE", weight_path=file); a type missing from
            kt_kernel._ext.formats() is reported missing, and the other sides still run;
  upstream  upstream kt-kernel 0.7.2's LLAMAFILE method on the file, run by the Python of its own
            environment (--upstream-python), per M the best of 1 and --threads threads; it needs
            I divisible by 256;
  torch     the protocol's PyTorch bf16 peer on gguf's dequantization of the file.
A side whose memory (its copy of the weights) exceeds what the machine has available is skipped,
and says so.

Reported per case, as bench_moe.py does: the median of >= 20 calls after warm-up, tokens/s; at
M <= 8 the effective weight bandwidth (distinct experts touched x 3HI x the format's
bits_per_weight / 8, torch's bf16 2 bytes, / time) as a % of the read bandwidth kt_kernel's probe
measured beside it: for ours and torch, in the side's process, --paired-rounds rounds of a probe
then 8 timed calls, the median of the rounds' ratios (this VM's bandwidth moves between about 36
and 64 GB/s within seconds, so a probe taken before a side can belong to another state); for
upstream (no kt_kernel probe in its environment), the probe right before its side; at M >= 64
GOP/s (2 x 3HI x M x K / time) as a % of the int8 peak (the integer family of the active tier:
vpdpbusd where the CPU has AVX512-VNNI; the torch peer: its bf16 family); upstream time / ours;
torch time / each side's; the relative error ||out - ref|| / ||ref|| of each side against one
reference for all: the MoE with fp64 products on gguf.quants.dequantize of the file's tensors
(summed over the K experts in fp32), the same inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import gguf
import numpy as np
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.accuracy import relative_error
from kt_kernel.formats import GGUF_METHOD, all_formats
from kt_kernel.random_moe import random_inputs
from kt_kernel.threads import all_cores
from kt_kernel.timing import Stopwatch
from kt_kernel.torch_moe import TORCH_PEER, moe_forward

import bench_report
from bench_moe import MachineLimits, cache_bytes, case_metrics, memory_line, other_load, require_positive
from gguf_side import PROJECTIONS, RELEASE_LAYERS, GgufLayer, projection_shape
from shapes import DECODE_TOKENS, TOKENS, Shape, get_shape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import gguf_reference  # noqa: E402  (tests/: random valid blocks of every GGUF type)

ARCH = "qwen3moe"
TYPES = ("q4_K", "q5_K", "q6_K", "q8_0", "iq4_xs")
SIDES = ("ours", "upstream", "torch")
WEIGHT_STD = {"gate": 0.02, "up": 0.02, "down": 0.03}
UPSTREAM_QK_K = 256  # upstream's LLAMAFILE splits I in blocks of 256
SIDE_SCRIPT = Path(__file__).resolve().parent / "gguf_side.py"
MEMORY_HEADROOM = 0.85  # share of MemAvailable a side may plan to take
# Quantized rows per projection that the experts' rows are drawn from: the K-quant quantizers
# take about 1 s per million weights, every row of shape B would take most of an hour per type.
# Each row the layer reads is still its own memory, so its time is that of distinct weights.
POOL_ROWS = 4096


FP8 = "fp8"  # --types fp8: an FP8 release's layer (write_fp8_checkpoint), method FP8 on every side
INT4 = "rawint4"  # --types rawint4: a compressed-tensors int4 release's layer, method RAWINT4
GPTQ = "gptq"  # --types gptq: an AutoGPTQ int4 release's layer, method GPTQ_INT4
MXFP4 = "mxfp4"  # --types mxfp4: a gpt-oss MXFP4 release's layer, method MXFP4 (not GGUF's MXFP4 blocks)
RELEASES = (FP8, INT4, GPTQ, MXFP4)  # the types that are releases' folders (gguf_side.RELEASE_LAYERS), not GGUF files
INT4_GROUP = 32
GPTQ_GROUP = 128  # the *-GPTQ-Int4 releases' group
FP8_BLOCK = (128, 128)


def kt_format(name: str) -> dict | None:
    """kt_kernel's record of the GGUF type `name` (of the format a release's method packs into, for
    fp8, rawint4, gptq and mxfp4), None where kt_kernel lacks it."""
    if name in RELEASES:
        native = {FP8: "fp8_g128", INT4: "int4_g32_zp", GPTQ: "int4_g32_zp", MXFP4: "mxfp4"}[name]
        return next((f for f in all_formats() if f["name"] == native), None)
    return next((f for f in all_formats() if f["name"] == name and f["method"] == GGUF_METHOD), None)


def method_of(fmt: str) -> str:
    return RELEASE_LAYERS[fmt].method if fmt in RELEASES else GgufLayer.method


def type_bytes_per_weight(name: str) -> float:
    """The format's bits_per_weight / 8 (gguf's block size where kt_kernel lacks the type)."""
    rec = kt_format(name)
    if rec is not None:
        return rec["bits_per_weight"] / 8
    k, b = gguf.GGML_QUANT_SIZES[gguf_reference.GGML_TYPES[name]]
    return b / k


# ---- the GGUF file -----------------------------------------------------------------------------

def random_block_scale(fmt: str, cols: int, std: float, rng: np.random.Generator) -> float:
    """The `scale` of gguf_reference.random_blocks whose dequantized weights have about this std."""
    trial = 2.0**-6
    sample = gguf_reference.dequantize(fmt, gguf_reference.random_blocks(fmt, 64, cols, rng, scale=trial), cols)
    return trial * std / float(sample.std())


def projection_blocks(fmt: str, shape: Shape, proj: str, seed: int, pool_rows: int) -> np.ndarray:
    """uint8 [E, rows, row bytes]: the projection's blocks. Where kt_kernel has the format, rows
    of its quantizer on Gaussian weights: a pool of `pool_rows` quantized rows (0: every row of
    every expert its own), each expert's rows drawn from the pool at random; else random valid
    blocks of the same std."""
    rows, cols = projection_shape(proj, shape.H, shape.I)
    rng = np.random.default_rng(seed)
    std = WEIGHT_STD[proj]
    if kt_format(fmt) is None:
        out = np.empty((shape.E, rows, gguf_reference.row_bytes(fmt, cols)), np.uint8)
        scale = random_block_scale(fmt, cols, std, rng)
        for e in range(shape.E):
            out[e] = gguf_reference.random_blocks(fmt, rows, cols, rng, scale=scale)
        return out
    total = shape.E * rows
    n = total if pool_rows == 0 else min(pool_rows, total)
    pool = np.empty((n, gguf_reference.row_bytes(fmt, cols)), np.uint8)
    g = torch.Generator().manual_seed(seed)
    for r0 in range(0, n, rows):  # one expert's worth of fp32 weights at a time
        r1 = min(n, r0 + rows)
        pool[r0:r1] = _ext.quantize(fmt, torch.randn(r1 - r0, cols, generator=g).mul_(std).numpy())["blocks"]
    if n == total:
        return pool.reshape(shape.E, rows, -1)
    return pool[rng.integers(0, n, (shape.E, rows))]


def fp16_fields(fmt: str, blocks: np.ndarray) -> np.ndarray:
    """Every fp16 scale field (d, dmin) of the blocks, as float16."""
    size = gguf_reference.block_size(fmt)[1]
    raw = blocks.reshape(-1, size)
    return np.concatenate([raw[:, off:off + 2].copy().view(np.float16).ravel()
                           for off in gguf_reference.FP16_FIELDS[fmt]])


def write_layer_file(path: Path, shape: Shape, fmt: str, pool_rows: int = POOL_ROWS) -> dict:
    """Writes the one-layer GGUF file; returns where its blocks came from ("blocks") and the
    share of its fp16 scale fields that are subnormals ("subnormal_share"). One projection's
    blocks are in memory at a time."""
    ggml_type = gguf_reference.GGML_TYPES[fmt]
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_block_count(1)
    writer.add_embedding_length(shape.H)
    writer.add_expert_feed_forward_length(shape.I)
    writer.add_expert_count(shape.E)
    writer.add_expert_used_count(shape.K)
    for proj in PROJECTIONS:
        rows, cols = projection_shape(proj, shape.H, shape.I)
        byte_shape = (shape.E, rows, gguf_reference.row_bytes(fmt, cols))
        writer.add_tensor_info(f"blk.0.ffn_{proj}_exps.weight", byte_shape, np.dtype(np.uint8),
                               int(np.prod(byte_shape)), raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    subnormal = fields = 0
    for seed, proj in enumerate(PROJECTIONS):
        blocks = projection_blocks(fmt, shape, proj, seed, pool_rows)
        d = np.abs(fp16_fields(fmt, blocks))
        subnormal, fields = subnormal + int(((d > 0) & (d < 2.0**-14)).sum()), fields + d.size
        writer.write_tensor_data(blocks)
        del blocks
    writer.close()
    pooled = 0 < pool_rows < shape.E * max(shape.H, shape.I)  # for some projection
    if kt_format(fmt) is None:
        source = "random valid blocks"
    else:
        source = "kt_kernel quantizer" + (f", rows from a pool of {pool_rows}" if pooled else "")
    return {"blocks": source, "subnormal_share": subnormal / fields, "subnormal_what": "fp16 scales"}


class DequantizedExperts:
    """One projection of the file's experts, dequantized by gguf as moe_forward indexes it, in
    fp64: one expert at a time in memory."""

    def __init__(self, layer: GgufLayer, proj: str):
        self.layer, self.proj = layer, proj
        self.shape = (layer.E, *projection_shape(proj, layer.H, layer.I))

    def __getitem__(self, e: int) -> torch.Tensor:
        return torch.from_numpy(self.layer.dequantize(self.proj, e)).double()


def write_fp8_checkpoint(path: Path, shape: Shape) -> dict:
    """An FP8 release's folder as DeepSeek-V3 ships one (config.json with quantization_config;
    layer 1's experts per expert: e4m3 weights, fp32 weight_scale_inv per 128 x 128 block), of
    Gaussian weights (WEIGHT_STD) rounded by torch's float8_e4m3fn."""
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": shape.H,
           "moe_intermediate_size": shape.I, "intermediate_size": 2 * shape.I, "n_routed_experts": shape.E,
           "num_experts_per_tok": shape.K, "num_hidden_layers": 2, "first_k_dense_replace": 1, "vocab_size": 32,
           "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                   "weight_block_size": list(FP8_BLOCK)}}
    (path / "config.json").write_text(json.dumps(cfg))
    bn, bk = FP8_BLOCK
    g, tensors, subnormal, weights = torch.Generator().manual_seed(0), {}, 0, 0
    for e in range(shape.E):
        for proj in PROJECTIONS:
            rows, cols = projection_shape(proj, shape.H, shape.I)
            w = torch.randn(rows, cols, generator=g) * WEIGHT_STD[proj]
            sn, sk = -(-rows // bn), -(-cols // bk)
            pad = torch.zeros(sn * bn, sk * bk)
            pad[:rows, :cols] = w
            scale = pad.reshape(sn, bn, sk, bk).abs().amax(dim=(1, 3)) / 448.0
            q = (w / scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:rows, :cols]).to(torch.float8_e4m3fn)
            key = f"model.layers.{RELEASE_LAYERS[FP8].layer_idx}.mlp.experts.{e}.{proj}_proj.weight"
            tensors[key], tensors[key + "_scale_inv"] = q, scale
            b = q.view(torch.uint8)
            subnormal, weights = subnormal + int(((b & 0x78) == 0).sum() - (b & 0x7F == 0).sum()), weights + b.numel()
    save_file(tensors, str(path / "model.safetensors"))
    return {"blocks": f"torch float8_e4m3fn of Gaussian weights, fp32 scales per {bn}x{bk} block",
            "subnormal_share": subnormal / weights, "subnormal_what": "e4m3 weights"}


def write_int4_checkpoint(path: Path, shape: Shape) -> dict:
    """A compressed-tensors int4 release's folder (Kimi-K2-Thinking's scheme: pack-quantized,
    symmetric groups of 32, bf16 scales; layer 1's experts per expert, DeepSeek-V3 names), of
    Gaussian weights (WEIGHT_STD) quantized and packed by compressed-tensors' own compressor."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams
    from safetensors.torch import save_file

    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=INT4_GROUP)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": shape.H,
           "moe_intermediate_size": shape.I, "intermediate_size": 2 * shape.I, "n_routed_experts": shape.E,
           "num_experts_per_tok": shape.K, "num_hidden_layers": 2, "first_k_dense_replace": 1, "vocab_size": 32,
           "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                   "config_groups": {"group_0": {"targets": ["Linear"], "weights": args.model_dump()}},
                                   "ignore": ["lm_head"]}}
    (path / "config.json").write_text(json.dumps(cfg))
    g, tensors = torch.Generator().manual_seed(0), {}
    for e in range(shape.E):
        for proj in PROJECTIONS:
            rows, cols = projection_shape(proj, shape.H, shape.I)
            w = torch.randn(rows, cols, generator=g) * WEIGHT_STD[proj]
            groups = w.reshape(rows, cols // INT4_GROUP, INT4_GROUP)
            scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
            c = PackedQuantizationCompressor.compress({"weight": w, "weight_scale": scale.bfloat16()}, scheme)
            for part, t in c.items():
                tensors[f"model.layers.{RELEASE_LAYERS[INT4].layer_idx}.mlp.experts.{e}.{proj}_proj.{part}"] = t
    save_file(tensors, str(path / "model.safetensors"))
    return {"blocks": f"compressed-tensors pack-quantized int4, symmetric groups of {INT4_GROUP}, bf16 scales",
            "subnormal_share": 0.0, "subnormal_what": "scales"}


def write_gptq_checkpoint(path: Path, shape: Shape) -> dict:
    """An AutoGPTQ int4 release's folder (the *-GPTQ-Int4 scheme: 4-bit, symmetric groups of 128,
    fp16 scales, desc_act false, checkpoint_format gptq; layer 1's experts per expert, DeepSeek-V3
    names), of Gaussian weights (WEIGHT_STD) rounded to nearest (scale max|w| / 7 per group)."""
    from safetensors.torch import save_file

    from kt_kernel.checkpoint.autogptq import gptq_pack

    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": shape.H,
           "moe_intermediate_size": shape.I, "intermediate_size": 2 * shape.I, "n_routed_experts": shape.E,
           "num_experts_per_tok": shape.K, "num_hidden_layers": 2, "first_k_dense_replace": 1, "vocab_size": 32,
           "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": GPTQ_GROUP, "desc_act": False,
                                   "sym": True, "checkpoint_format": "gptq"}}
    (path / "config.json").write_text(json.dumps(cfg))
    g, tensors = torch.Generator().manual_seed(0), {}
    for e in range(shape.E):
        for proj in PROJECTIONS:
            rows, cols = projection_shape(proj, shape.H, shape.I)
            w = (torch.randn(rows, cols, generator=g) * WEIGHT_STD[proj]).numpy()
            blocks = w.reshape(rows, cols // GPTQ_GROUP, GPTQ_GROUP)
            s = (np.abs(blocks).max(-1) / 7).astype(np.float16)
            q = np.clip(np.rint(blocks / s.astype(np.float32)[..., None]) + 8, 0, 15).astype(np.uint8).reshape(rows, cols)
            for part, t in gptq_pack(q, np.full(s.shape, 8), s).items():
                tensors[f"model.layers.{RELEASE_LAYERS[GPTQ].layer_idx}.mlp.experts.{e}.{proj}_proj.{part}"] = \
                    torch.from_numpy(t)
    save_file(tensors, str(path / "model.safetensors"))
    return {"blocks": f"AutoGPTQ int4, symmetric groups of {GPTQ_GROUP}, fp16 scales", "subnormal_share": 0.0,
            "subnormal_what": "scales"}


def write_mxfp4_checkpoint(path: Path, shape: Shape) -> dict:
    """A gpt-oss MXFP4 release's folder (config.json with quantization_config mxfp4; layer 0's
    experts fused: gate_up_proj_blocks / _scales with gate and up interleaved along 2I,
    down_proj_blocks / _scales, bf16 biases) of Gaussian weights (WEIGHT_STD) quantized by
    kt_kernel's mxfp4 quantizer, and in its Mxfp4Layer.UPSTREAM_DIR the same blocks in
    DeepSeek-V4-Flash's per-expert layout (w1 gate, w3 up, w2 down: I8 [N, K/2] nibbles, element 2j
    low, F8_E8M0 [N, K/32] scales), which upstream's MXFP4 reads. The biases are zero and the config
    says swiglu_limit 0 and swiglu_alpha 0 (plain SwiGLU): upstream's MXFP4 has no biases and
    computes silu(gate) * up, so both sides compute the same function."""
    from safetensors.torch import save_file
    from kt_kernel.models.mxfp4_model import quantize_gpt_oss

    layer = RELEASE_LAYERS[MXFP4]
    up_dir = path / layer.UPSTREAM_DIR
    up_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_size": shape.H,
           "intermediate_size": shape.I, "num_local_experts": shape.E, "num_experts_per_tok": shape.K,
           "num_hidden_layers": 1, "vocab_size": 32, "swiglu_limit": 0.0, "swiglu_alpha": 0.0,
           "quantization_config": {"quant_method": "mxfp4"}}
    (path / "config.json").write_text(json.dumps(cfg))
    H, I, E, L = shape.H, shape.I, shape.E, layer.layer_idx
    gu_b = np.empty((E, 2 * I, H // 32, 16), np.uint8)
    gu_s = np.empty((E, 2 * I, H // 32), np.uint8)
    dn_b = np.empty((E, H, I // 32, 16), np.uint8)
    dn_s = np.empty((E, H, I // 32), np.uint8)
    g, theirs, subnormal = torch.Generator().manual_seed(0), {}, 0
    for e in range(E):
        for proj, name in zip(PROJECTIONS, ("w1", "w3", "w2")):
            rows, cols = projection_shape(proj, H, I)
            b, s = quantize_gpt_oss((torch.randn(rows, cols, generator=g) * WEIGHT_STD[proj]).numpy())
            if proj == "down":
                dn_b[e], dn_s[e] = b, s
            else:
                n = 0 if proj == "gate" else 1
                gu_b[e, n::2], gu_s[e, n::2] = b, s
            key = f"model.layers.{L}.ffn.experts.{e}.{name}"
            theirs[key + ".weight"] = torch.from_numpy(b.reshape(rows, cols // 2)).view(torch.int8)
            theirs[key + ".scale"] = torch.from_numpy(s).view(torch.float8_e8m0fnu)
            subnormal += int(((b & 0x7) == 1).sum() + ((b & 0x70) == 0x10).sum())  # e2m1 +-0.5
    mlp = f"model.layers.{L}.mlp.experts"
    arrays = {"gate_up_proj_blocks": gu_b, "gate_up_proj_scales": gu_s, "down_proj_blocks": dn_b,
              "down_proj_scales": dn_s}
    ours = {f"{mlp}.{k}": torch.from_numpy(v) for k, v in arrays.items()}
    ours[f"{mlp}.gate_up_proj_bias"] = torch.zeros(E, 2 * I, dtype=torch.bfloat16)
    ours[f"{mlp}.down_proj_bias"] = torch.zeros(E, H, dtype=torch.bfloat16)
    save_file(ours, str(path / "model.safetensors"))
    save_file(theirs, str(up_dir / "model.safetensors"))
    return {"blocks": f"kt_kernel mxfp4 quantizer of Gaussian weights, gpt-oss layout (upstream: DeepSeek-V4 "
                      f"layout in {layer.UPSTREAM_DIR}/), zero biases",
            "subnormal_share": subnormal / (E * shape.weights_per_expert()), "subnormal_what": "e2m1 weights"}


WRITE_RELEASE = {FP8: write_fp8_checkpoint, INT4: write_int4_checkpoint, GPTQ: write_gptq_checkpoint,
                 MXFP4: write_mxfp4_checkpoint}


def open_layer(path: Path, fmt: str):
    return RELEASE_LAYERS[fmt](str(path)) if fmt in RELEASES else GgufLayer(str(path))


def reference_output(path: Path, fmt: str, x, ids, w) -> torch.Tensor:
    """fp64 [M, H]: the MoE on the dequantization of the file (gguf's; torch's float8 decoding for
    fp8; e2m1 times 2^(s - 127) for mxfp4, no biases, plain SwiGLU as its config says), fp64 products."""
    layer = open_layer(path, fmt)
    experts = [DequantizedExperts(layer, p) for p in PROJECTIONS]
    return moe_forward(x, ids, w, *experts, compute_dtype=torch.float64, out_dtype=torch.float64)


# ---- memory ------------------------------------------------------------------------------------

def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo, None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def side_bytes(side: str, shape: Shape, fmt: str) -> int:
    """What a side holds: its copy of the weights (ours and upstream: the blocks, as the file;
    torch: bf16) and one expert in fp32 (torch's dequantization)."""
    if side == "torch":
        return shape.source_bytes(2.0) + shape.weights_per_expert() * 4
    return shape.source_bytes(type_bytes_per_weight(fmt))


def memory_refusal(side: str, shape: Shape, fmt: str) -> str | None:
    need, have = side_bytes(side, shape, fmt), available_bytes()
    if have is not None and need > MEMORY_HEADROOM * have:
        return f"skipped: needs {need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available"
    return None


# ---- the sides ---------------------------------------------------------------------------------

PAIRED_CALLS = 8  # calls timed after each probe of a paired round (gguf_side.paired_rounds)


def run_side(side: str, python: str, path: Path, fmt: str, inputs: Path, workdir: Path, threads: int,
             args) -> dict:
    """One side in a fresh process of `python`; its result (gguf_side.run) or {"status": why not}."""
    out, log = workdir / f"{side}-{threads}.pt", workdir / f"{side}-{threads}.log"
    case = {fmt if fmt in RELEASES else "gguf": str(path), "inputs": str(inputs), "out": str(out), "tokens": args.tokens,
            "threads": threads, "iters": args.iters, "min_time": args.min_time, "warmup": args.warmup,
            "paired_max_m": max(DECODE_TOKENS), "paired_rounds": args.paired_rounds, "paired_calls": PAIRED_CALLS,
            "paired_mib": args.bw_mib}
    case_file = workdir / f"{side}-{threads}.json"
    case_file.write_text(json.dumps(case))
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log in the order things happened
    if side == "upstream":
        env.pop("PYTHONPATH", None)  # its own environment's kt_kernel, not this checkout's
    with open(log, "w") as f:
        rc = subprocess.run([python, str(SIDE_SCRIPT), side, str(case_file)], stdout=f, stderr=subprocess.STDOUT,
                            env=env).returncode
    if rc != 0:
        lines = log.read_text().strip().splitlines()
        print("\n".join(f"    | {line}" for line in lines[-15:]))
        errors = [line.strip() for line in lines if "Error" in line or "what():" in line]
        return {"status": f"failed: exit status {rc}" + (f" ({errors[-1]})" if errors else ""), "log_tail": lines[-15:]}
    result = torch.load(out, weights_only=True)
    out.unlink()
    return {"status": "ok", **result}


def best_of(runs: list[dict]) -> dict:
    """Per M, the run of fewest milliseconds (upstream: best of its thread counts)."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return runs[0]
    best = {"status": "ok", "info": ok[0]["info"], "cases": {}, "threads_by_m": {}, "outputs": ok[0]["outputs"],
            "runs": {r["threads"]: {M: c["median_s"] for M, c in r["cases"].items()} for r in ok}}
    for M in ok[0]["cases"]:
        r = min(ok, key=lambda r: r["cases"][M]["median_s"])
        best["cases"][M], best["threads_by_m"][M] = r["cases"][M], r["threads"]
    return best


def refusal(side: str, shape: Shape, fmt: str, args) -> str | None:
    """Why `side` cannot run this (shape, type) file, None where it can."""
    if side == "ours" and kt_format(fmt) is None:
        return f"missing: kt_kernel has no {fmt} format (kt_kernel._ext.formats())"
    if side == "upstream" and args.upstream_python is None:
        return "skipped: no --upstream-python"
    if side == "upstream" and fmt not in RELEASES and shape.I % UPSTREAM_QK_K:
        return f"skipped: upstream's LLAMAFILE needs I divisible by {UPSTREAM_QK_K}, I={shape.I}"
    return memory_refusal(side, shape, fmt)


def run_sides(shape: Shape, fmt: str, path: Path, args, inputs: Path, probe: MachineLimits) -> dict:
    """side -> its result (run_side, best_of) with the limits measured right before it, or
    {"status": why not}."""
    rec = kt_format(fmt)
    results = {}
    for side in args.sides:
        why = refusal(side, shape, fmt, args)
        if why:
            print(f"  {side}: {why}", flush=True)
            results[side] = {"status": why}
            continue
        label = f"{shape.name} {fmt} {side}"
        bw = probe.bandwidth(label)
        peak = (probe.peak(TORCH_PEER, label) if side == "torch" else
                probe.peak(method_of(fmt), label, int_dot=rec["int_dot"] if rec else True))
        print(f"  {side}: read bandwidth now {bw['best_gbps']:.1f} GB/s, peak of {peak['family'] or '-'} "
              f"{peak['gops'] or 0:.0f} {peak['unit'] or ''}", flush=True)
        running = Stopwatch()
        if side == "upstream":
            r = best_of([run_side(side, args.upstream_python, path, fmt, inputs, args.workdir, t, args)
                         for t in sorted({1, args.threads})])
        else:
            r = run_side(side, sys.executable, path, fmt, inputs, args.workdir, args.threads, args)
        results[side] = {**r, "bandwidth": bw, "peak": peak}
        print(f"  {side}: {r['status']} ({running.seconds:.1f} s with its start-up)", flush=True)
    return results


def case_rows(shape: Shape, fmt: str, results: dict, ref: torch.Tensor, ids: torch.Tensor, args) -> list[dict]:
    """The rows of one (shape, type): per side its status, or per M its figures."""
    rec = kt_format(fmt)
    cache_total = sum(cache_bytes().values())
    rows = []
    for side, r in results.items():
        if r["status"] != "ok":
            rows.append({"shape": shape.name, "type": fmt, "side": side, "status": r["status"],
                         **({"log_tail": r["log_tail"]} if "log_tail" in r else {})})
            continue
        for M in args.tokens:
            c = r["cases"][M]
            row = {"shape": shape.name, "type": fmt, "side": side, "status": "ok", "M": M,
                   "ms": c["median_s"] * 1e3, **c, "threads": r.get("threads_by_m", {}).get(M, args.threads),
                   "kernel": r["info"].get("kernel"), "info": r["info"],
                   "rel_err": relative_error(r["outputs"][M], ref[:M]),
                   "bound": rec["layer_rel_err"] if side == "ours" else None,
                   "bandwidth_gbps": r["bandwidth"]["best_gbps"], "peak": r["peak"]}
            bpw = 2.0 if side == "torch" else type_bytes_per_weight(fmt)
            row.update(case_metrics(shape, M, ids[:M], bpw, c["median_s"]))
            if M in DECODE_TOKENS:
                if c.get("paired"):  # each round's bandwidth over its probe's; the median round
                    ratios = sorted(row["weight_bytes_touched"] / t / 1e9 / bw for bw, t in c["paired"])
                    row["pct_limit"] = 100 * ratios[len(ratios) // 2]
                    row["bandwidth_gbps"] = sorted(bw for bw, _ in c["paired"])[len(c["paired"]) // 2]
                    row["paired_bw_range"] = (min(bw for bw, _ in c["paired"]), max(bw for bw, _ in c["paired"]))
                else:
                    row["pct_limit"] = 100 * row["gbps"] / row["bandwidth_gbps"]
                # the same routing every call: weights under about twice the L2 + L3 come partly from cache
                row["may_be_cached"] = bool(cache_total and row["weight_bytes_touched"] <= 2 * cache_total)
            else:
                row["pct_limit"] = 100 * row["gops"] / r["peak"]["gops"] if r["peak"]["gops"] else None
            if "runs" in r:
                row["upstream_runs_ms"] = {t: ms[M] * 1e3 for t, ms in r["runs"].items()}
            rows.append(row)
    ms = {(r["side"], r["M"]): r["ms"] for r in rows if r["status"] == "ok"}
    for row in rows:
        if row["status"] == "ok":
            ours, up, tor = (ms.get((s, row["M"])) for s in ("ours", "upstream", "torch"))
            row["upstream_over_ours"] = up / ours if row["side"] == "ours" and up and ours else None
            row["torch_over_this"] = tor / row["ms"] if tor else None
    return rows


def run_type(shape: Shape, fmt: str, args, inputs: Path, cases, probe: MachineLimits) -> tuple[list[dict], dict]:
    """Every side on one (shape, type) file: its rows, and what the file held."""
    path = args.workdir / (f"{shape.name}-{fmt}" if fmt in RELEASES else f"{shape.name}-{fmt}.gguf")
    made = Stopwatch()
    written = WRITE_RELEASE[fmt](path, shape) if fmt in RELEASES else write_layer_file(path, shape, fmt, args.pool_rows)
    # a folder's files (mxfp4: not its upstream/, a second copy of the same blocks)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size
    file = {"shape": shape.name, "type": fmt, **written, "bytes": size}
    print(f"  {fmt}: {file['bytes'] / 2**30:.2f} GiB ({file['blocks']}, {100 * file['subnormal_share']:.2f}% of the "
          f"{file['subnormal_what']} subnormal) written in {made.seconds:.1f} s", flush=True)
    refs = Stopwatch()
    ref = reference_output(path, fmt, *cases)
    print(f"  fp64 reference on the file's dequantization: {refs.seconds:.1f} s; {memory_line()}", flush=True)
    try:
        results = run_sides(shape, fmt, path, args, inputs, probe)
    finally:
        if not args.keep_files:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    ours = results.get("ours", {}).get("info")
    if ours:
        file["ours"] = {k: ours[k] for k in ("kernel", "tier", "prefetch") if k in ours}
    return case_rows(shape, fmt, results, ref, cases[1], args), file


# ---- the tables --------------------------------------------------------------------------------

HEADER = ("| type | side | M | ms | tok/s | GB/s or GOP/s | % limit | upstream / ours | torch / this | rel err |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['type']} | {r['side']} | - | {r['status']} | | | | | | |"
    if r["M"] in DECODE_TOKENS:
        rate = f"{r['gbps']:.1f} GB/s" + ("*" if r["may_be_cached"] else "")
    else:
        rate = f"{r['gops']:.0f} {'GF/s' if r['side'] == 'torch' or r['type'] == FP8 else 'GOP/s'}"
    side = r["side"] + (f" ({r['threads']} thr)" if r["side"] == "upstream" else "")
    pct = "-" if r["pct_limit"] is None else f"{r['pct_limit']:.0f}%"
    ratio = "" if r["upstream_over_ours"] is None else f"{r['upstream_over_ours']:.2f}"
    vs_torch = "" if r["torch_over_this"] is None else f"{r['torch_over_this']:.2f}"
    return (f"| {r['type']} | {side} | {r['M']} | {r['ms']:.3f} | {r['tok_s']:.1f} | {rate} | {pct} | {ratio} | "
            f"{vs_torch} | {r['rel_err']:.4f} |")


def file_note(f: dict) -> str:
    ours = f.get("ours")
    kernels = (f"; ours: {ours['kernel']} ({ours['tier']}, weight stream prefetch {ours.get('prefetch', '?')})"
               if ours else "")
    return (f"- {f['type']}: {f['bytes'] / 2**30:.2f} GiB file, its blocks: {f['blocks']} "
            f"({100 * f['subnormal_share']:.2f}% of the {f['subnormal_what']} subnormal){kernels}")


NOTES = [
    "% limit: M <= 8 of the read bandwidth (GB/s = distinct experts x 3HI x bytes/weight / ms; torch reads",
    "bf16; * = those weights are under 2x the L2+L3 caches, so calls with the same routing may read them partly",
    "from cache): ours and torch the median over rounds of (probe, 8 calls) of each round's ratio (each probe",
    "leaves the caches cold), upstream against the probe right before its side; M >= 64 of the instruction peak",
    "measured then (kt and upstream: the int8 family of the active tier, for fp8 its bf16 one; torch: its bf16",
    "family). upstream / ours:",
    "upstream ms / ours ms (upstream at its best of 1 and --threads threads). rel err: ||out - ref|| / ||ref||, ref = the MoE in fp64 on gguf's",
    "dequantization of the same file (fp8: torch's float8_e4m3fn decoding times the block scales; mxfp4: e2m1",
    "times 2^(s - 127), zero biases, plain SwiGLU), the same inputs.",
]


def markdown(result: dict) -> str:
    c = result["conditions"]
    bw = [b["best_gbps"] for b in result["limits"]["bandwidth"]]
    lines = [f"`{' '.join(['python3', *result['command']])}`", "",
             f"{c['cpu_info']['brand']}, {c['cores']} cores, {c['threads']} threads; torch {c['torch']}, kt_kernel "
             f"{c['kt_kernel']}; upstream {c['upstream_python'] or 'not run'}; {c['time']}. Read bandwidth in the "
             f"same run {min(bw):.1f}-{max(bw):.1f} GB/s.", ""]
    for name in result["shapes"]:
        s = result["shapes"][name]
        lines += [f"### Shape {name}: H={s['H']} I={s['I']} E={s['E']} K={s['K']} ({s['like']})", "", HEADER]
        lines += [table_row(r) for r in result["results"] if r["shape"] == name]
        lines += [""] + [file_note(f) for f in result["files"] if f["shape"] == name] + [""]
    return "\n".join(lines + NOTES) + "\n"


# ---- the run -----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="A", help="comma-separated shape names from shapes.py (A, B, C; S is small)")
    p.add_argument("--types", default=",".join(TYPES),
                   help=f"comma-separated GGUF types (ggml spellings; default {','.join(TYPES)})")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated sides to run (default {','.join(SIDES)})")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated tokens per call M")
    p.add_argument("--threads", type=int, default=all_cores(), help="threads of each side (default: all cores)")
    p.add_argument("--upstream-python", default=os.environ.get("KT_UPSTREAM_PYTHON"),
                   help="the Python of an environment with upstream kt-kernel 0.7.2 installed "
                        "(default: $KT_UPSTREAM_PYTHON; none: the upstream side is skipped)")
    p.add_argument("--pool-rows", type=int, default=POOL_ROWS,
                   help=f"rows quantized per projection, which the experts' rows are drawn from at random (default "
                        f"{POOL_ROWS}; 0: every row quantized, slow for the K-quants: ~1 s per million weights)")
    p.add_argument("--iters", type=int, default=20, help="timed calls per case (the protocol asks for >= 20)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per case at least")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--bw-mib", type=int, default=1024, help="MiB read by the bandwidth probe")
    p.add_argument("--paired-rounds", type=int, default=12,
                   help="decode cases of ours and torch: rounds of (probe, 8 calls) whose median ratio is the "
                        "%% of bandwidth (0: against the probe before the side)")
    p.add_argument("--peak-seconds", type=float, default=0.5, help="seconds per instruction-family peak probe")
    p.add_argument("--workdir", default=None,
                   help="folder of the GGUF files and the sides' exchanges (default: a temporary folder, removed)")
    p.add_argument("--keep-files", action="store_true", help="keep each GGUF file (in --workdir) after its sides ran")
    p.add_argument("--json", default=None, help="write every figure and the run's conditions here")
    p.add_argument("--markdown", default=None, metavar="MD", help="write the results tables as Markdown here")
    args = p.parse_args(argv)
    try:
        args.shapes = [get_shape(s.strip()).name for s in args.shapes.split(",") if s.strip()]
    except KeyError as e:
        p.error(e.args[0])
    known = {t.lower(): t for t in gguf_reference.FP16_FIELDS} | {t: t for t in RELEASES}  # block types, releases
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t.lower() not in known:
            p.error(f"unknown GGUF block type {t!r}; known: {', '.join(known.values())}")
    args.types = [known[t.lower()] for t in types]
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for s in args.sides:
        if s not in SIDES:
            p.error(f"unknown side {s!r}; sides: {', '.join(SIDES)}")
    args.tokens = sorted({int(t) for t in args.tokens.split(",") if t.strip()})
    if not args.tokens or min(args.tokens) <= 0:
        p.error(f"--tokens must be positive, got {args.tokens}")
    require_positive(p, args, "threads", "iters")
    if args.pool_rows < 0:
        p.error(f"--pool-rows must be 0 (every row quantized) or positive, got {args.pool_rows}")
    if args.upstream_python and not Path(args.upstream_python).exists():
        p.error(f"--upstream-python {args.upstream_python} does not exist")
    if args.iters < 20:
        print(f"warning: --iters {args.iters} is below the protocol's 20 calls", file=sys.stderr)
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_clock = Stopwatch()
    info = kt_kernel.cpu_info()
    print(f"CPU: {info['brand']}, {all_cores()} cores; tier {info['active_tier']}; threads {args.threads}; "
          f"kt_kernel GGUF formats: {', '.join(f['name'] for f in all_formats() if f['method'] == GGUF_METHOD)}")
    print(f"upstream: {args.upstream_python or 'not run (no --upstream-python)'}")
    load0 = other_load(1.0)
    print(f"other processes keep {'?' if load0 is None else f'{load0:.1f}'} of {all_cores()} cores busy")
    probe = MachineLimits(args.bw_mib, args.threads, args.peak_seconds)
    temp = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="bench_gguf-") if temp else args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows, files = [], []
    try:
        for name in args.shapes:
            shape = get_shape(name)
            print(f"\nshape {shape.name}: H={shape.H} I={shape.I} E={shape.E} K={shape.K} ({shape.like})", flush=True)
            x, ids, w = random_inputs(max(args.tokens), shape.H, shape.E, shape.K, seed=0)
            inputs = args.workdir / f"inputs-{shape.name}.pt"
            torch.save({"x": x, "ids": ids, "w": w}, inputs)
            for fmt in args.types:
                type_rows, file = run_type(shape, fmt, args, inputs, (x, ids, w), probe)
                print("\n".join([HEADER, *map(table_row, type_rows), file_note(file)]), flush=True)
                rows += type_rows
                files.append(file)
    finally:
        if temp:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print("\n" + "\n".join(NOTES))
    bw1 = probe.bandwidth("end")
    print(f"read bandwidth at the end {bw1['best_gbps']:.1f} GB/s; total {run_clock.seconds:.0f} s")

    result = {
        "protocol": "docs/benchmark_protocol.md",
        "command": ["benchmarks/bench_gguf.py", *argv],
        "conditions": {"threads": args.threads, "iters": args.iters, "min_time_s": args.min_time,
                       "warmup": args.warmup, "cpu_info": info, "cores": all_cores(),
                       "upstream_python": args.upstream_python, "weight_std": WEIGHT_STD,
                       "pool_rows": args.pool_rows,
                       **bench_report.software(),
                       "gguf_formats": [f for f in all_formats() if f["method"] == GGUF_METHOD]},
        "other_load_cores": {"start": load0},
        "limits": {"bandwidth": probe.samples, "peaks": probe.peaks},
        "shapes": {n: asdict(get_shape(n)) for n in args.shapes},
        "files": files,
        "results": rows,
    }
    bench_report.write_files(result, args.json, args.markdown, markdown)
    return result


if __name__ == "__main__":
    main()
