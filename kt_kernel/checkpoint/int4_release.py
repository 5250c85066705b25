"""What the int4 release layouts share (methods RAWINT4 and GPTQ_INT4): the reader of a folder of
per-expert packed int4 weights with scales and zero points per group along K, as the logical
arrays of int4_g32_zp (int4_g32's kernels on every tier, with an integer zero point).

A release's weight is ``scale * (q - z)``, q and z 4-bit: int4_g32_zp's w = d (u - z) with u = q,
d = scale and z per group of 32 (a release group of 64 or 128 gives its d and z to each of its 32s).
Every such weight is an fp32 value and the kernels form d * z exactly, so a release loads exactly
when its scales are fp16 values, which every bf16 or fp16 scale from 2^-17 to 65280 is; another
scale (most fp32 ones) is refused, naming the tensor and value.

The layouts (kt_kernel.checkpoint.ct_int4: compressed-tensors pack-quantized; .autogptq:
AutoGPTQ / GPTQModel) subclass Int4Release with their tensor names, expected shapes and the
decoding of one projection.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import index_tensors
from kt_kernel.checkpoint.safetensors_io import MappedFolder
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, INTERMEDIATE_FIELDS, moe_layer_indices, read_config, text_config

__all__ = ["INT4_RELEASE_METHODS", "INT4_RELEASE_FORMAT", "GROUP", "Int4Release", "decode_int4_zp", "int4_group_arrays",
           "quantization_config"]

INT4_RELEASE_METHODS = ("RAWINT4", "GPTQ_INT4")
INT4_RELEASE_FORMAT = "int4_g32_zp"  # the format an int4 release loads into, whatever its method
GROUP = 32  # int4_g32_zp's group
PROJ = {"gate_proj": 0, "up_proj": 1, "down_proj": 2, "w1": 0, "w3": 1, "w2": 2}
PROJ_NAMES = ("gate", "up", "down")


def quantization_config(path) -> dict:
    raw = read_config(path, ConversionError)
    return raw.get("quantization_config") or text_config(raw).get("quantization_config") or {}


def expert_key_pattern(parts: str) -> re.Pattern:
    """Names ``...layers.L.<block>.experts.E.<proj>.<part>``, part one of ``parts`` (a regex alternation)."""
    return re.compile(r"^(?:.*\.)?layers\.(\d+)\.[A-Za-z_]+\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)"
                      rf"\.({parts})$")


def decode_int4_zp(packed: np.ndarray, d16: np.ndarray, z: np.ndarray) -> np.ndarray:
    """fp32 [N, K] of int4_g32_zp's logical arrays as the readers give them: packed uint8 [N, K / 2]
    (k even in the low nibble), d fp16 bits and z uint8 [N, K / 32]; w = d (u - z), exact."""
    u = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], -1).astype(np.int32)
    d = np.repeat(d16.view(np.float16).astype(np.float32), GROUP, axis=1)[:, :u.shape[1]]
    zk = np.repeat(z.astype(np.int32), GROUP, axis=1)[:, :u.shape[1]]
    return d * (u - zk).astype(np.float32)


def int4_group_arrays(s: np.ndarray, z: np.ndarray, K: int, group: int, key: str) -> tuple:
    """int4_g32_zp's d = s (fp16 bits) and z (uint8), [N, ceil(K / 32)], from a release's fp32
    scales ``s`` and integer zero points ``z`` (the 4-bit value of a zero weight; AutoGPTQ's gptq
    layout reaches 16), both [N, K / group], after checking that fp16 holds each scale exactly
    (else a ConversionError naming ``key`` and the value)."""
    h = s.astype(np.float16)
    bad = ~np.isfinite(s) | (h.astype(np.float32) != s)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ConversionError(f"{key}{list(at)}: scale = {float(s[at])!r} is not an fp16 value, which int4_g32_zp "
                              "holds exactly: bf16 and fp16 scales from 2^-17 to 65280 are")
    reps, groups = group // GROUP, -(-K // GROUP)
    d16 = np.repeat(h, reps, axis=1)[:, :groups]
    z8 = np.repeat(z.astype(np.uint8), reps, axis=1)[:, :groups]
    return np.ascontiguousarray(d16).view(np.uint16), np.ascontiguousarray(z8)


class Int4Release:
    """The routed experts of an int4 release as int4_g32_zp's logical arrays. A layout gives
    ``kind``, ``private_parts`` (the arrays computed in memory rather than viewed in the file
    maps), ``KEY`` (expert_key_pattern of its parts), ``layout_name`` (for errors), ``stored_dtype``
    (what the converter records of its source), and
    ``_check_args(q, where)`` (its quantization_config, returning the group size rule),
    ``_expected(N, K)`` (part -> (dtype or None, shape) of one projection, the optional parts
    absent), ``_refuse(key, part)`` (a part it cannot read, or None), and ``_projection(keys, e,
    j, N, K, mapped)`` -> (packed uint8 [N, K / 2], d16, z8)."""
    KEY: re.Pattern
    layout_name: str

    def __init__(self, path, method: str):
        path = Path(path)
        where = str(path / "config.json")
        self._check_args(quantization_config(path), where)
        cfg = text_config(read_config(path, ConversionError))
        E = next((int(cfg[f]) for f in EXPERT_COUNT_FIELDS if cfg.get(f)), None)
        I = next((int(cfg[f]) for f in INTERMEDIATE_FIELDS if cfg.get(f)), None)
        if E is None or I is None:
            raise ConversionError(f"{where} lacks the expert count or the expert intermediate size")
        self.path, self.stored_method, self.config = path, method, cfg
        self.num_experts, self.intermediate_size, self.hidden_size = E, I, int(cfg["hidden_size"])
        self.num_layers = int(cfg["num_hidden_layers"])
        self.index = index = index_tensors(path)  # headers only; the converter's float view reuses it
        self.tensors, self.fingerprint = index.tensors, index.fingerprint
        self.keys: dict = {}  # layer -> {(e, proj, part): key}
        for k in self.tensors:
            m = self.KEY.match(k)
            if m and int(m.group(1)) < self.num_layers:
                self._refuse(k, m.group(4))
                self.keys.setdefault(int(m.group(1)), {})[(int(m.group(2)), PROJ[m.group(3)], m.group(4))] = k
        self.moe_layers = sorted(self.keys)
        missing = sorted(set(moe_layer_indices(cfg, self.num_layers)) - set(self.moe_layers))
        if not self.moe_layers or missing:
            raise ConversionError(f"{path}: no packed int4 experts for layer {missing[0] if missing else 'any'} "
                                  f"(looked for {self.layout_name} tensors model.layers.L.mlp.experts.E.gate_proj.*)")

    def _refuse(self, key: str, part: str) -> None:
        return None

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        where = str(self.path / "config.json")
        if method != self.stored_method:
            raise ConversionError(f"{self.path} stores {self.layout_name} int4 experts, read as they are by method "
                                  f"{self.stored_method}; method {method!r} is another format")
        for field, got, want in (("hidden_size", self.hidden_size, hidden_size),
                                 ("intermediate_size (moe_intermediate_size)", self.intermediate_size, intermediate_size),
                                 ("num_experts", self.num_experts, num_experts)):
            if want is not None and got != want:
                raise ConversionError(f"{where}: {field} is {got!r} in config.json but {want!r} in this KTMoEWrapper")
        if layer not in self.moe_layers:
            raise ConversionError(f"{self.path}: layer_idx {layer} is not an MoE layer (MoE layers: {self.moe_layers})")
        keys, H, I = self.keys[layer], self.hidden_size, self.intermediate_size
        for e in range(self.num_experts):
            for j, (N, K) in enumerate(((I, H), (I, H), (H, I))):
                for part, (dtype, shape) in self._expected(N, K).items():
                    k = keys.get((e, j, part))
                    if k is None:
                        raise ConversionError(f"{self.path}: layer {layer} expert {e} {PROJ_NAMES[j]} has no {part}")
                    t = self.tensors[k][1]
                    if t["shape"] != shape or (dtype and t["dtype"] != dtype):
                        raise ConversionError(f"{k} is {t['dtype']} {tuple(t['shape'])}; config.json's sizes and the "
                                              f"quantization_config make it {dtype or 'a float'} {tuple(shape)}")
                    if dtype is None and t["dtype"] not in ("BF16", "F16", "F32"):
                        raise ConversionError(f"{k} has dtype {t['dtype']}; scales are read as BF16, F16 or F32")

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, part) -> one array per logical expert (None for those not in ``experts``):
        "qweight" the packed values, uint8 [N, K / 2], "scale" and "zero" int4_g32_zp's d (fp16
        bits) and z (uint8), [N, K / 32]."""
        maps = MappedFolder(self.path, self.tensors)
        arrays = {(p, part): [None] * self.num_experts for p in PROJ_NAMES for part in ("qweight", "scale", "zero")}
        try:
            for e in sorted(experts):
                for j in range(3):
                    for part, a in zip(("qweight", "scale", "zero"), self._arrays(layer, e, j, maps.array)):
                        arrays[(PROJ_NAMES[j], part)][e] = a
            yield arrays
        finally:
            arrays.clear()  # the maps close below only once no view of them is left
            maps.close()

    def decode(self, layer: int, e: int, proj: int) -> np.ndarray:
        """fp32 [N, K] of one projection (0 gate, 1 up, 2 down) of expert ``e``: scale * (q - z),
        exact; safe to call from several threads at once."""
        maps = MappedFolder(self.path, self.tensors)
        try:
            return decode_int4_zp(*self._arrays(layer, e, proj, maps.array))
        finally:
            maps.close()

    def _arrays(self, layer: int, e: int, j: int, mapped) -> tuple:
        N, K = ((self.intermediate_size, self.hidden_size), (self.intermediate_size, self.hidden_size),
                (self.hidden_size, self.intermediate_size))[j]
        return self._projection(self.keys[layer], e, j, N, K, mapped)
