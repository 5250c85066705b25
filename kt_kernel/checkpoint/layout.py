"""The converted-checkpoint format (version 1): key names, dtypes, shapes, metadata.

A converted folder holds, for MoE layer L of E logical experts (gate/up [E, I, H], down [E, H, I],
each projection an [E, N, K] stack of N x K matrices), one file ``kt-experts-L{L:04d}.safetensors``:

  kt.layers.{L}.experts.{proj}.qweight     proj in gate, up, down
        bf16      BF16 [E, N, K]
        int8_pc   I8   [E, N, K]               w = scale[e, n] * q
        int4_g32  U8   [E, N, ceil(K/2)]       q[k] in the low nibble of byte k//2 for even k,
                                               the high nibble for odd k, q in 0..15
  kt.layers.{L}.experts.{proj}.scale       int8_pc: F32 [E, N];  int4_g32: F16 [E, N, ceil(K/32)] (d)
  kt.layers.{L}.experts.{proj}.min         int4_g32: F16 [E, N, ceil(K/32)] (m);  w = d * q + m

These are the logical arrays of kt_kernel's reference quantizer (``kt_kernel._ext.quantize``),
independent of the NUMA layout and thread count: the split across sub-pools and the kernel
packing happen at load. Each file's safetensors ``__metadata__`` holds kt_format, method,
format, group, layer, num_experts, hidden_size, intermediate_size, source (the fingerprint) and
xxh3 (per-expert checksums, kt_kernel.checkpoint.integrity).
Non-expert tensors are copied unchanged into ``kt-nonexpert-{i:05d}.safetensors``, files of at
most ``shard_bytes`` (4 GB by default; a larger tensor gets a file of its own); ``model.safetensors.index.json`` maps every key to its file;
``kt_kernel_meta.json``, written last, records the whole conversion.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FORMAT_VERSION", "META_FILE", "PROJ", "layer_file", "key", "layer_arrays_spec", "pack_nibbles"]

FORMAT_VERSION = 1
META_FILE = "kt_kernel_meta.json"
INDEX_FILE = "model.safetensors.index.json"
PROJ = ("gate", "up", "down")


def layer_file(layer: int) -> str:
    return f"kt-experts-L{layer:04d}.safetensors"


def nonexpert_file(i: int) -> str:
    return f"kt-nonexpert-{i:05d}.safetensors"


def key(layer: int, proj: str, part: str) -> str:
    return f"kt.layers.{layer}.experts.{proj}.{part}"


def layer_arrays_spec(fmt: str, group: int, E: int, H: int, I: int) -> dict:
    """(proj, part) -> (safetensors dtype, numpy dtype, shape) of one layer's arrays."""
    spec = {}
    for proj in PROJ:
        N, K = (H, I) if proj == "down" else (I, H)
        if fmt == "bf16":
            spec[(proj, "qweight")] = ("BF16", np.uint16, (E, N, K))
        elif fmt == "int8_pc":
            spec[(proj, "qweight")] = ("I8", np.int8, (E, N, K))
            spec[(proj, "scale")] = ("F32", np.float32, (E, N))
        elif fmt == "int4_g32":
            G = -(-K // group)
            spec[(proj, "qweight")] = ("U8", np.uint8, (E, N, (K + 1) // 2))
            spec[(proj, "scale")] = ("F16", np.uint16, (E, N, G))
            spec[(proj, "min")] = ("F16", np.uint16, (E, N, G))
        else:
            raise ValueError(f"format {fmt!r} has no converted layout")
    return spec


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 [N, K] values in 0..15 -> [N, ceil(K/2)]: even k low nibble, odd k high nibble."""
    N, K = q.shape
    if K % 2:
        q = np.concatenate([q, np.zeros((N, 1), np.uint8)], axis=1)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
