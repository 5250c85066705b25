"""Tiny GGUF model files for the tests, written with gguf.GGUFWriter: the expert metadata, the
three expert tensors of each MoE layer in chosen ggml types filled with random valid blocks, and
split sets whose split.* keys are written here (as llama.cpp's gguf-split writes them).

Random valid blocks come from gguf_reference (random bytes whose fp16 fields, the scales and mins,
are finite; random values for the float types), scaled per type here; gguf.quants.dequantize
reads them back (the truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize

import gguf_reference as gr

ARCH = "qwen3moe"

# the fp16 fields' magnitude per type (gguf_reference.fp16_scales: up to this, log-uniform over 4
# octaves below, a quarter subnormal), so that weights come out with rms 0.03-0.07 (measured) in
# every type: the K-quants' d multiplies a 4..8-bit sub-block scale and a 2..6-bit quant, the
# 32-weight types' d a 4..8-bit quant (iq4's a table value up to 127); float types: std 4 * scale (0.1)
_SCALE = {"Q4_0": 2e-2, "Q4_1": 2e-2, "Q5_0": 1e-2, "Q5_1": 5e-3, "Q8_0": 2e-3, "IQ4_NL": 2e-3,
          "Q2_K": 6e-3, "Q3_K": 2e-3, "Q4_K": 5e-4, "Q5_K": 2.5e-4, "Q6_K": 1.2e-4, "IQ4_XS": 1.2e-4,
          "MXFP4": 1e-2, "BF16": 2.5e-2, "F16": 2.5e-2, "F32": 2.5e-2}

PROJ = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def kt_format(ggml_type: str) -> str:
    """The kt format name of a ggml type name (Q4_K -> q4_K)."""
    return ggml_type.lower().replace("_k", "_K")


def random_blocks(rng: np.random.Generator, ggml_type: str, shape: tuple) -> np.ndarray:
    """uint8 [..., row_bytes] of random valid blocks (gguf_reference.random_blocks) for logical
    ``shape`` [..., K] of ``ggml_type``."""
    *outer, K = shape
    rows = gr.random_blocks(kt_format(ggml_type), int(np.prod(outer)), K, rng, scale=_SCALE[ggml_type])
    return rows.reshape(*outer, rows.shape[-1])


def dequantized(blocks: np.ndarray, ggml_type: str) -> np.ndarray:
    """float32 [..., K] of uint8 blocks [..., row_bytes] (gguf.quants.dequantize, the truth)."""
    return dequantize(np.ascontiguousarray(blocks), GGMLQuantizationType[ggml_type])


def expert_tensors(rng, E: int, H: int, I: int, layers, types=("Q8_0", "Q8_0", "Q8_0")) -> dict:
    """{tensor name: (ggml type, uint8 blocks [E, N, row_bytes])} of every layer's experts."""
    out = {}
    for layer in layers:
        for j, name in enumerate(PROJ):
            N, K = (H, I) if j == 2 else (I, H)
            out[f"blk.{layer}.{name}.weight"] = (types[j], random_blocks(rng, types[j], (E, N, K)))
    return out


def _writer(path: Path, meta: dict, arch: str, **kw) -> GGUFWriter:
    w = GGUFWriter(str(path), arch, **kw)
    for key, value in meta.items():
        key = key.replace("{arch}", arch)
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, tuple):  # (writer method name, value): a key of another value type
            getattr(w, value[0])(key, value[1])
        else:
            w.add_uint32(key, value)
    return w


def model_meta(E: int, H: int, I: int, topk: int = 2) -> dict:
    return {"{arch}.expert_count": E, "{arch}.expert_used_count": topk, "{arch}.embedding_length": H,
            "{arch}.expert_feed_forward_length": I, "{arch}.block_count": 4}


def write_gguf(path, tensors: dict, meta: dict, arch: str = ARCH, extra: Optional[dict] = None, **kw) -> Path:
    """Writes one GGUF file: ``meta`` ("{arch}" in a key becomes ``arch``), then ``tensors``
    ({name: (ggml type, uint8 blocks)}, other tensors from ``extra`` likewise); ``kw`` to
    GGUFWriter (endianess)."""
    path = Path(path)
    w = _writer(path, meta, arch, **kw)
    for name, (ggml_type, data) in {**tensors, **(extra or {})}.items():
        w.add_tensor(name, data, raw_dtype=GGMLQuantizationType[ggml_type])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_split(folder, prefix: str, tensors: dict, meta: dict, shards: int, arch: str = ARCH,
                tensors_count: Optional[int] = None) -> list:
    """A split set of ``shards`` files PREFIX-0000k-of-0000N.gguf, the tensors dealt out in order;
    every shard carries split.no / split.count / split.tensors.count (u16, u16, i32 as llama.cpp's
    gguf-split writes them) and the first also ``meta``."""
    folder = Path(folder)
    names = list(tensors)
    per = -(-len(names) // shards)
    paths = []
    for i in range(shards):
        split = {"split.no": ("add_uint16", i), "split.count": ("add_uint16", shards),
                 "split.tensors.count": ("add_int32", len(names) if tensors_count is None else tensors_count)}
        p = folder / f"{prefix}-{i + 1:05d}-of-{shards:05d}.gguf"
        write_gguf(p, {n: tensors[n] for n in names[i * per:(i + 1) * per]}, {**(meta if i == 0 else {}), **split},
                   arch)
        paths.append(p)
    return paths
