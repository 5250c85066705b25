"""compressed-tensors int4 releases loaded as they are stored (methods RAWINT4 and GPTQ_INT4):
Kimi-K2-Thinking's experts, and what llm-compressor's GPTQ writes.

The format (compressed-tensors ``pack-quantized``, ``num_bits`` 4, ``type`` int, ``strategy``
group or channel): per linear layer ``weight_packed`` int32 [N, K / 8], eight values per word,
value i in bits 4i..4i+3, each the signed q (-8..7) plus 8; ``weight_scale`` [N, K / group] (bf16,
fp16 or fp32); ``weight_shape`` [N, K]; when asymmetric, ``weight_zero_point`` int32
[ceil(N / 8), K / group], the zero points z (-8..7) plus 8 packed the same way along N. A weight is
``scale * (q - z)``: int4_g32_zp with u = q + 8 and zero point z + 8 (8 when symmetric)
(kt_kernel.checkpoint.int4_release). The packed words, read as bytes, are int4_g32_zp's converted
layout already (k even in the low nibble), so the values are zero-copy views of the files' memory
maps. ``actorder`` group (a ``weight_g_idx`` permutation) is refused.
"""
from __future__ import annotations

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.int4_release import (GROUP, INT4_RELEASE_METHODS, Int4Release, decode_int4_zp,
                                               expert_key_pattern, int4_group_arrays, quantization_config)
from kt_kernel.checkpoint.safetensors_io import as_float32

__all__ = ["CompressedInt4Checkpoint", "INT4_RELEASE_METHODS", "is_compressed_int4", "decode_int4_zp"]


def is_compressed_int4(path) -> bool:
    """Whether ``path`` is a compressed-tensors pack-quantized checkpoint."""
    try:
        q = quantization_config(path)
    except ConversionError:
        return False
    return q.get("quant_method") == "compressed-tensors" and q.get("format") == "pack-quantized"


class CompressedInt4Checkpoint(Int4Release):
    """The routed experts of a compressed-tensors int4 checkpoint as int4_g32_zp's logical arrays."""
    kind = "compressed-int4"
    private_parts = ("scale", "zero")  # computed in memory; the values are views of the file maps
    layout_name = "compressed-tensors"
    stored_dtype = "int4 pack-quantized"
    KEY = expert_key_pattern("weight_packed|weight_scale|weight_zero_point|weight_shape|weight_g_idx")

    def _check_args(self, q: dict, where: str) -> None:
        """The weights' quantization args of the config group that targets the linear layers."""
        if not (q.get("quant_method") == "compressed-tensors" and q.get("format") == "pack-quantized"):
            raise ConversionError(f"{where}: methods {' and '.join(INT4_RELEASE_METHODS)} read compressed-tensors "
                                  f"pack-quantized int4 or AutoGPTQ int4 checkpoints; this quantization_config is "
                                  f"{q.get('quant_method')!r} / {q.get('format')!r}")
        groups = q.get("config_groups") or {}
        args = [g.get("weights") for g in groups.values() if isinstance(g, dict) and g.get("weights")]
        if len(args) != 1:
            raise ConversionError(f"{where}: quantization_config.config_groups has {len(args)} weight schemes; one "
                                  "int4 scheme for the experts is supported")
        a = args[0]
        for field, want in (("num_bits", 4), ("type", "int")):
            if a.get(field) != want:
                raise ConversionError(f"{where}: quantization_config weights.{field} is {a.get(field)!r}; RAWINT4 and "
                                      f"GPTQ_INT4 read {field}={want!r}")
        if a.get("strategy") not in ("group", "channel"):
            raise ConversionError(f"{where}: quantization_config weights.strategy is {a.get('strategy')!r}; group or "
                                  "channel is supported")
        if a.get("strategy") == "group" and (not a.get("group_size") or a["group_size"] % GROUP):
            raise ConversionError(f"{where}: quantization_config weights.group_size is {a.get('group_size')!r}; a "
                                  f"multiple of {GROUP} is supported")
        if a.get("actorder") == "group":
            raise ConversionError(f"{where}: quantization_config weights.actorder is 'group' (a g_idx permutation of K "
                                  "per group), which is not supported; actorder 'static' or none is")
        self.args = a
        self.symmetric = bool(a.get("symmetric", True))

    def _refuse(self, key: str, part: str) -> None:
        if part == "weight_g_idx":
            raise ConversionError(f"{key}: a g_idx (activation-order permutation) is not supported")

    def _group_size(self, K: int) -> int:
        return K if self.args["strategy"] == "channel" else int(self.args["group_size"])

    def _expected(self, N: int, K: int) -> dict:
        g = self._group_size(K)
        want = {"weight_packed": ("I32", [N, K // 8]), "weight_scale": (None, [N, K // g]), "weight_shape": ("", [2])}
        if not self.symmetric:
            want["weight_zero_point"] = ("I32", [-(-N // 8), K // g])
        return want

    def _projection(self, keys: dict, e: int, j: int, N: int, K: int, mapped) -> tuple:
        """int4_g32_zp's arrays (qweight view, d, z) of projection j of expert e, its weight_shape checked."""
        shape_key = keys[(e, j, "weight_shape")]
        stored = [int(v) for v in mapped(shape_key)]
        if stored != [N, K]:
            raise ConversionError(f"{shape_key} is {stored}, expected {[N, K]}")
        key = keys[(e, j, "weight_scale")]
        s = as_float32(mapped(key), self.tensors[key][1]["dtype"])
        if self.symmetric:
            v = np.full(s.shape, 8, np.int32)
        else:
            words = mapped(keys[(e, j, "weight_zero_point")]).view(np.uint32)  # [ceil(N / 8), groups]: row 8w + i at bits 4i
            nib = (words[:, None, :] >> (4 * np.arange(8, dtype=np.uint32))[None, :, None]) & 0xF
            v = nib.reshape(-1, s.shape[1])[:N].astype(np.int32)
        d, z = int4_group_arrays(s, v, K, self._group_size(K), key)
        return mapped(keys[(e, j, "weight_packed")]).view(np.uint8), d, z
