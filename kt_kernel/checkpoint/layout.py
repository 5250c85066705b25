"""The converted-checkpoint format (version 1): key names, dtypes, shapes, metadata.

A converted folder holds, for MoE layer L of E logical experts (gate/up [E, I, H], down [E, H, I],
each projection an [E, N, K] stack of N x K matrices), one file ``kt-experts-L{L:04d}.safetensors``
with one tensor per array of the format's record (``kt_kernel._ext.formats()[i]["arrays"]``):

  kt.layers.{L}.experts.{proj}.{part}      proj in gate, up, down; part, dtype from the array
        per "value"   [E, N, K]   (file_bits 4: [E, N, ceil(K/2)], element k in the low nibble of
                                   byte k//2 for even k, the high nibble for odd k)
        per "row"     [E, N]
        per "group"   [E, N, ceil(K/group)]

e.g. int4_g32 stores qweight U8 [E, N, ceil(K/2)], scale F16 and min F16 [E, N, ceil(K/32)]
(w = scale * q + min); int8_pc qweight I8 [E, N, K] and scale F32 [E, N] (w = scale * q).

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

from kt_kernel import _ext

__all__ = ["FORMAT_VERSION", "META_FILE", "PROJ", "BIAS_PART", "layer_file", "key", "format_record", "layer_arrays_spec",
           "to_file_array"]

FORMAT_VERSION = 1
META_FILE = "kt_kernel_meta.json"
INDEX_FILE = "model.safetensors.index.json"
PROJ = ("gate", "up", "down")


# Expert biases (gpt-oss), optional in a layer file: kt.layers.{L}.experts.{proj}.bias, fp32 [E, N].
BIAS_PART = "bias"


def layer_file(layer: int) -> str:
    return f"kt-experts-L{layer:04d}.safetensors"


def nonexpert_file(i: int) -> str:
    return f"kt-nonexpert-{i:05d}.safetensors"


def key(layer: int, proj: str, part: str) -> str:
    return f"kt.layers.{layer}.experts.{proj}.{part}"


_RECORDS = {f["name"]: f for f in _ext.formats()}


def format_record(fmt: str) -> dict:
    """The record of weight format ``fmt`` (an entry of ``kt_kernel._ext.formats()``)."""
    if fmt not in _RECORDS:
        raise ValueError(f"format {fmt!r} has no converted layout; formats: {', '.join(_RECORDS)}")
    return _RECORDS[fmt]


def layer_arrays_spec(fmt: str, group: int, E: int, H: int, I: int) -> dict:
    """(proj, part) -> (safetensors dtype, numpy dtype, shape) of one layer's arrays, in the order
    of the format's arrays."""
    arrays = format_record(fmt)["arrays"]
    spec = {}
    for proj in PROJ:
        N, K = (H, I) if proj == "down" else (I, H)
        for a in arrays:
            per = {"value": K, "row": None, "group": -(-K // group) if group else None}[a["per"]]
            if a["file_bits"] == 4:
                per = (per + 1) // 2
            shape = (E, N) if per is None else (E, N, per)
            spec[(proj, a["part"])] = (a["dtype"], np.dtype(a["numpy"]), shape)
    return spec


def to_file_array(a: np.ndarray, file_bits: int) -> np.ndarray:
    """A logical array [N, ...] as the converted file stores it: file_bits 4 packs values 0..15 two
    per byte, even k in the low nibble (a row of odd length gets a zero high nibble)."""
    if file_bits != 4:
        return a
    N, K = a.shape
    if K % 2:
        a = np.concatenate([a, np.zeros((N, 1), np.uint8)], axis=1)
    return (a[:, 0::2] | (a[:, 1::2] << 4)).astype(np.uint8)
