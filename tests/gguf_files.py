"""Tiny GGUF model files for the tests, written with gguf.GGUFWriter: the expert metadata, the
three expert tensors of each MoE layer in chosen ggml types filled with random valid blocks, and
split sets whose split.* keys are written here (as llama.cpp's gguf-split writes them).

Random valid blocks are random bytes whose fp16 fields (the scales and mins) are set to finite
values; float types get random values. gguf.quants.dequantize reads them back (the truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize

ARCH = "qwen3moe"

# byte offsets of the fp16 fields (d, and dmin / m where the type has one) in one block
_FP16_FIELDS = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "IQ4_NL": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,),
}
# magnitude of those fields, so that weights come out with rms 0.03-0.06 (measured) in every
# type: the K-quants' d multiplies a 4..8-bit sub-block scale and a 2..6-bit quant, the 32-weight
# types' d a 4..8-bit quant (iq4's a table value up to 127); some d are fp16 subnormals, as files have
_SCALE = {"Q4_0": 1e-2, "Q4_1": 1e-2, "Q5_0": 5e-3, "Q5_1": 2.5e-3, "Q8_0": 1e-3, "IQ4_NL": 1e-3,
          "Q2_K": 3e-3, "Q3_K": 1e-3, "Q4_K": 2.5e-4, "Q5_K": 1.2e-4, "Q6_K": 6e-5, "IQ4_XS": 6e-5}

PROJ = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def random_blocks(rng: np.random.Generator, ggml_type: str, shape: tuple) -> np.ndarray:
    """uint8 [..., row_bytes] of random valid blocks for logical ``shape`` [..., K] of ``ggml_type``."""
    qtype = GGMLQuantizationType[ggml_type]
    block, size = GGML_QUANT_SIZES[qtype]
    *outer, K = shape
    assert K % block == 0, (ggml_type, K)
    if ggml_type in ("F32", "F16", "BF16"):
        v = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if ggml_type == "F16":
            return v.astype(np.float16).view(np.uint8)
        if ggml_type == "BF16":
            return (v.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return v.view(np.uint8)
    n = int(np.prod(outer)) * (K // block)
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    scale = _SCALE[ggml_type]
    for off in _FP16_FIELDS[ggml_type]:
        raw[:, off:off + 2] = (rng.uniform(0.25, 1.0, n) * scale).astype(np.float16).view(np.uint8).reshape(n, 2)
    return raw.reshape(*outer, K // block * size)


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
