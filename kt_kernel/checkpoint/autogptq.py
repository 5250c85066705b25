"""AutoGPTQ / GPTQModel int4 releases (``quantization_config.quant_method`` "gptq": the
``*-GPTQ-Int4`` MoE models) loaded as they are stored by methods GPTQ_INT4 and RAWINT4.

The layout, per linear layer: ``qweight`` int32 [K / 8, N], the value q (0..15) of k = 8i + j in
bits 4j..4j+3 of row i; ``qzeros`` int32 [K / g, ceil(N / 8)], the zero point of column 8c + j in
bits 4j of column c; ``scales`` [K / g, N] (fp16; bf16 or fp32 read too); ``g_idx`` int32 [K], the
group of each k (k // g unless activation order reordered it). ``checkpoint_format`` "gptq" (the
default, AutoGPTQ's v1) stores each zero point minus one, "gptq_v2" stores it as it is. A weight is
``scale * (q - zero point)``: int4_g32_zp with u = q (kt_kernel.checkpoint.int4_release); "gptq"
zero points reach 16 (a stored 15), which int4_g32_zp holds as well.

Byte b of qweight's word (i, n) holds k = 8i + 2b in its low nibble and k + 1 in its high one:
int4_g32_zp's converted byte (n, 4i + b) exactly, so the values load by one byte transpose per projection, no
arithmetic (a copy of the packed size, as the scales are). Refused with the field named: bits other
than 4, ``desc_act`` (or a g_idx other than k // g), a group size that is not a multiple of 32,
per-module ``dynamic`` overrides, and expert biases that are not zero.
"""
from __future__ import annotations

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.int4_release import GROUP, Int4Release, expert_key_pattern, int4_group_arrays, quantization_config
from kt_kernel.checkpoint.safetensors_io import as_float32

__all__ = ["AutoGptqCheckpoint", "decode_gptq_linear", "gptq_pack", "is_autogptq_int4"]

_FORMATS = {"gptq": 1, "gptq_v2": 0}  # checkpoint_format -> what to add to a stored zero point


def is_autogptq_int4(path) -> bool:
    """Whether ``path`` is an AutoGPTQ / GPTQModel checkpoint (quant_method "gptq")."""
    try:
        return quantization_config(path).get("quant_method") == "gptq"
    except ConversionError:
        return False


def unpack_columns(words: np.ndarray, n: int) -> np.ndarray:
    """uint8 [rows, n] of int32 words [rows, ceil(n / 8)] holding column 8c + j in bits 4j of word c."""
    w = words.view(np.uint32)
    nib = (w[:, :, None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
    return nib.reshape(w.shape[0], -1)[:, :n].astype(np.uint8)


def decode_gptq_linear(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx, zero_offset: int) -> np.ndarray:
    """fp32 [N, K] of one AutoGPTQ linear layer as stored (scales already fp32 [groups, N]): scale *
    (q - zero point) with each k in group g_idx[k] (k // (K / groups) without one). For the layers
    outside the routed experts, which a whole model loads into transformers."""
    K, N = qweight.shape[0] * 8, qweight.shape[1]
    words = qweight.view(np.uint32)
    q = ((words[:, None, :] >> (4 * np.arange(8, dtype=np.uint32))[None, :, None]) & 0xF).reshape(K, N)
    z = unpack_columns(qzeros, N).astype(np.float32) + zero_offset
    groups = np.arange(K) // (K // scales.shape[0]) if g_idx is None else np.asarray(g_idx, dtype=np.int64)
    return np.ascontiguousarray((scales[groups] * (q.astype(np.float32) - z[groups])).T)


def gptq_pack(q: np.ndarray, z: np.ndarray, s: np.ndarray, zero_offset: int = 1) -> dict:
    """AutoGPTQ's tensors of one linear layer from its 4-bit values q [N, K], zero points z and
    fp16 scales s [N, groups]: qweight, qzeros (each zero point minus ``zero_offset``: 1 for
    checkpoint_format gptq), scales, g_idx."""
    N, K = q.shape
    groups = s.shape[1]
    rows = np.zeros((K // 8, N), np.uint32)
    for j in range(8):
        rows |= q[:, j::8].T.astype(np.uint32) << np.uint32(4 * j)
    stored = (z - zero_offset).T.astype(np.uint32)  # [groups, N]
    cols = np.zeros((groups, -(-N // 8) * 8), np.uint32)
    cols[:, :N] = stored
    zeros = np.zeros((groups, cols.shape[1] // 8), np.uint32)
    for j in range(8):
        zeros |= cols[:, j::8] << np.uint32(4 * j)
    return {"qweight": rows.view(np.int32), "qzeros": zeros.view(np.int32), "scales": np.ascontiguousarray(s.T),
            "g_idx": (np.arange(K) // (K // groups)).astype(np.int32)}


class AutoGptqCheckpoint(Int4Release):
    """The routed experts of an AutoGPTQ int4 checkpoint as int4_g32_zp's logical arrays."""
    kind = "autogptq-int4"
    private_parts = ("qweight", "scale", "zero")  # transposed in memory
    layout_name = "AutoGPTQ"
    stored_dtype = "int4 gptq"
    KEY = expert_key_pattern("qweight|qzeros|scales|g_idx|bias")

    def _check_args(self, q: dict, where: str) -> None:
        if q.get("quant_method") != "gptq":
            raise ConversionError(f"{where}: quantization_config.quant_method is {q.get('quant_method')!r}; an "
                                  "AutoGPTQ checkpoint has 'gptq'")
        if q.get("bits") != 4:
            raise ConversionError(f"{where}: quantization_config.bits is {q.get('bits')!r}; RAWINT4 and GPTQ_INT4 read "
                                  "bits=4")
        g = q.get("group_size", 128)
        if not isinstance(g, int) or (g != -1 and (g <= 0 or g % GROUP)):
            raise ConversionError(f"{where}: quantization_config.group_size is {g!r}; -1 (per channel) or a multiple "
                                  f"of {GROUP} is supported")
        if q.get("desc_act"):
            raise ConversionError(f"{where}: quantization_config.desc_act is true (activation order, a g_idx "
                                  "permutation of K), which is not supported; desc_act false is")
        if q.get("dynamic"):
            raise ConversionError(f"{where}: quantization_config.dynamic (per-module overrides) is not supported")
        fmt = q.get("checkpoint_format", "gptq")
        if fmt not in _FORMATS:
            raise ConversionError(f"{where}: quantization_config.checkpoint_format is {fmt!r}; "
                                  f"{' or '.join(map(repr, _FORMATS))} is supported")
        self.group_size, self.zero_offset = g, _FORMATS[fmt]

    def _group(self, K: int) -> int:
        return K if self.group_size == -1 else self.group_size

    def _expected(self, N: int, K: int) -> dict:
        g = self._group(K)
        if K % 8 or K % g:
            raise ConversionError(f"{self.path}: K = {K} is not whole words of 8 and groups of {g}")
        return {"qweight": ("I32", [K // 8, N]), "qzeros": ("I32", [K // g, -(-N // 8)]), "scales": (None, [K // g, N])}

    def _projection(self, keys: dict, e: int, j: int, N: int, K: int, mapped) -> tuple:
        g = self._group(K)
        gkey = keys.get((e, j, "g_idx"))
        if gkey is not None:
            g_idx = np.asarray(mapped(gkey)).astype(np.int64)
            if g_idx.shape != (K,) or not np.array_equal(g_idx, np.arange(K) // g):
                raise ConversionError(f"{gkey}: the group of each k is not k // {g} (activation order), which is not "
                                      "supported")
        bkey = keys.get((e, j, "bias"))
        if bkey is not None and np.any(as_float32(mapped(bkey), self.tensors[bkey][1]["dtype"]) != 0):
            raise ConversionError(f"{bkey}: expert biases are not supported (these experts have no bias in their "
                                  "architecture)")
        skey = keys[(e, j, "scales")]
        s = np.ascontiguousarray(as_float32(mapped(skey), self.tensors[skey][1]["dtype"]).T)  # [N, K / g]
        z = unpack_columns(mapped(keys[(e, j, "qzeros")]), N).T.astype(np.int32) + self.zero_offset
        d, z8 = int4_group_arrays(s, z, K, g, skey)
        q = mapped(keys[(e, j, "qweight")]).view(np.uint8).reshape(K // 8, N, 4)
        return np.ascontiguousarray(q.transpose(1, 0, 2)).reshape(N, K // 2), d, z8
