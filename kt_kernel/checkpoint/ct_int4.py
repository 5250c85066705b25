"""compressed-tensors int4 releases loaded as they are stored (methods RAWINT4 and GPTQ_INT4):
Kimi-K2-Thinking's experts, and what llm-compressor's GPTQ W4A16 writes.

The format (compressed-tensors ``pack-quantized``, ``num_bits`` 4, ``type`` int, ``strategy``
group or channel): per linear layer ``weight_packed`` int32 [N, K / 8], eight values per word,
value i in bits 4i..4i+3, each the signed q (-8..7) plus 8; ``weight_scale`` [N, K / group] (bf16,
fp16 or fp32); ``weight_shape`` [N, K]; when asymmetric, ``weight_zero_point`` int32
[ceil(N / 8), K / group], the zero points z (-8..7) plus 8 packed the same way along N. A weight is
``scale * (q - z)``.

That is exactly the int4_g32 format (method AMXINT4's kernels, every tier, AMX included) with
u = q + 8 its 4-bit value, v = z + 8 (8 when symmetric), d = scale and m = -scale * v per group of
32 (a group of 64 or 128 gives its d and m to each of its 32s): w = d u + m. The packed words,
read as bytes, are int4_g32's converted layout already (k even in the low nibble), so the values
are zero-copy views of the files' memory maps; d and m are fp16, exact when the scale and
scale * v are fp16 values, else the load refuses naming the tensor and value: every bf16 or fp16
scale from 2^-17 to 8188 of a symmetric release (v = 8) is; an asymmetric zero point times a bf16
scale can need 12 significant bits, one more than fp16 has, and fp32 scales rarely fit. ``actorder``
group (a ``weight_g_idx`` permutation) is refused.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import index_tensors
from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, INTERMEDIATE_FIELDS, moe_layer_indices, read_config, text_config

__all__ = ["CompressedInt4Checkpoint", "INT4_RELEASE_METHODS", "is_compressed_int4", "decode_int4_g32"]

INT4_RELEASE_METHODS = ("RAWINT4", "GPTQ_INT4")
GROUP = 32  # int4_g32's group
_PROJ = {"gate_proj": 0, "up_proj": 1, "down_proj": 2, "w1": 0, "w3": 1, "w2": 2}
_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.[A-Za-z_]+\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)"
                  r"\.(weight_packed|weight_scale|weight_zero_point|weight_shape|weight_g_idx)$")
_SCALE_DTYPES = {"BF16", "F16", "F32"}


def _quantization_config(path) -> dict:
    raw = read_config(path, ConversionError)
    return raw.get("quantization_config") or text_config(raw).get("quantization_config") or {}


def is_compressed_int4(path) -> bool:
    """Whether ``path`` is a compressed-tensors pack-quantized checkpoint."""
    try:
        q = _quantization_config(path)
    except ConversionError:
        return False
    return q.get("quant_method") == "compressed-tensors" and q.get("format") == "pack-quantized"


def _weight_args(q: dict, where: str) -> dict:
    """The weights' quantization args of the config group that targets the linear layers."""
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
        raise ConversionError(f"{where}: quantization_config weights.strategy is {a.get('strategy')!r}; group or channel "
                              "is supported")
    if a.get("strategy") == "group" and (not a.get("group_size") or a["group_size"] % GROUP):
        raise ConversionError(f"{where}: quantization_config weights.group_size is {a.get('group_size')!r}; a multiple "
                              f"of {GROUP} is supported")
    if a.get("actorder") == "group":
        raise ConversionError(f"{where}: quantization_config weights.actorder is 'group' (a g_idx permutation of K per "
                              "group), which is not supported; actorder 'static' or none is")
    return a


def decode_int4_g32(packed: np.ndarray, d16: np.ndarray, m16: np.ndarray) -> np.ndarray:
    """fp32 [N, K] of int4_g32's logical arrays as the reader gives them: packed uint8 [N, K / 2]
    (k even in the low nibble), d and m fp16 bits [N, K / 32]; w = d u + m."""
    u = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], -1).astype(np.float32)
    d, m = (np.repeat(a.view(np.float16).astype(np.float32), GROUP, axis=1)[:, :u.shape[1]] for a in (d16, m16))
    return d * u + m


class CompressedInt4Checkpoint:
    """The routed experts of a compressed-tensors int4 checkpoint as int4_g32's logical arrays."""
    kind = "compressed-int4"
    private_parts = ("scale", "min")  # computed in memory; the values are views of the file maps

    def __init__(self, path, method: str):
        path = Path(path)
        where = str(path / "config.json")
        q = _quantization_config(path)
        if not is_compressed_int4(path):
            raise ConversionError(f"{where}: method {method} reads compressed-tensors pack-quantized int4 checkpoints; "
                                  f"this quantization_config is {q.get('quant_method')!r} / {q.get('format')!r}")
        self.args = _weight_args(q, where)
        self.symmetric = bool(self.args.get("symmetric", True))
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
            m = _KEY.match(k)
            if m and int(m.group(1)) < self.num_layers:
                if m.group(4) == "weight_g_idx":
                    raise ConversionError(f"{k}: a g_idx (activation-order permutation) is not supported")
                self.keys.setdefault(int(m.group(1)), {})[(int(m.group(2)), _PROJ[m.group(3)], m.group(4))] = k
        self.moe_layers = sorted(self.keys)
        missing = sorted(set(moe_layer_indices(cfg, self.num_layers)) - set(self.moe_layers))
        if not self.moe_layers or missing:
            raise ConversionError(f"{path}: no packed int4 experts for layer {missing[0] if missing else 'any'} "
                                  "(looked for model.layers.L.mlp.experts.E.gate_proj.weight_packed)")

    def _group_size(self, K: int) -> int:
        return K if self.args["strategy"] == "channel" else int(self.args["group_size"])

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        where = str(self.path / "config.json")
        if method != self.stored_method:
            raise ConversionError(f"{self.path} stores compressed-tensors int4 experts, read as they are by method "
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
                g = self._group_size(K)
                want = {"weight_packed": ("I32", [N, K // 8]), "weight_scale": (None, [N, K // g]),
                        "weight_shape": (None, [2])}
                if not self.symmetric:
                    want["weight_zero_point"] = ("I32", [-(-N // 8), K // g])
                for part, (dtype, shape) in want.items():
                    k = keys.get((e, j, part))
                    if k is None:
                        raise ConversionError(f"{self.path}: layer {layer} expert {e} {('gate', 'up', 'down')[j]} has no "
                                              f"{part}")
                    t = self.tensors[k][1]
                    if t["shape"] != shape or (dtype and t["dtype"] != dtype):
                        raise ConversionError(f"{k} is {t['dtype']} {tuple(t['shape'])}; config.json's sizes and the "
                                              f"quantization_config make it {dtype or 'a float'} {tuple(shape)}")
                    if part == "weight_scale" and t["dtype"] not in _SCALE_DTYPES:
                        raise ConversionError(f"{k} has dtype {t['dtype']}; scales are read as BF16, F16 or F32")

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, part) -> one array per logical expert (None for those not in ``experts``):
        "qweight" the packed words as bytes, uint8 [N, K / 2] (views of the mapped files), "scale"
        and "min" int4_g32's d and m, fp16 bits [N, K / 32]."""
        maps = MappedFolder(self.path, self.tensors)
        mapped = maps.array

        proj_names = ("gate", "up", "down")
        arrays = {(p, part): [None] * self.num_experts for p in proj_names for part in ("qweight", "scale", "min")}
        try:
            for e in sorted(experts):
                for j in range(3):
                    q, d, m = self._projection(layer, e, j, mapped)
                    for part, a in (("qweight", q), ("scale", d), ("min", m)):
                        arrays[(proj_names[j], part)][e] = a
            yield arrays
        finally:
            arrays.clear()  # the maps close below only once no view of them is left
            maps.close()

    def decode(self, layer: int, e: int, proj: int) -> np.ndarray:
        """fp32 [N, K] of one projection (0 gate, 1 up, 2 down) of expert ``e``: scale * (q - z),
        exact; safe to call from several threads at once."""
        maps = MappedFolder(self.path, self.tensors)
        try:
            return decode_int4_g32(*self._projection(layer, e, proj, maps.array))
        finally:
            maps.close()

    def _projection(self, layer: int, e: int, j: int, mapped) -> tuple:
        """int4_g32's arrays (qweight view, d, m) of projection j of expert e, its weight_shape checked."""
        keys, H, I = self.keys[layer], self.hidden_size, self.intermediate_size
        N, K = ((I, H), (I, H), (H, I))[j]
        shape_key = keys[(e, j, "weight_shape")]
        stored = [int(v) for v in mapped(shape_key)]
        if stored != [N, K]:
            raise ConversionError(f"{shape_key} is {stored}, expected {[N, K]}")
        d, m = self._scales(keys, e, j, N, K, mapped)
        return mapped(keys[(e, j, "weight_packed")]).view(np.uint8), d, m

    def _scales(self, keys, e, j, N, K, mapped) -> tuple:
        """int4_g32's d = scale and m = -scale * v (v: the zero point + 8, 8 when symmetric), fp16
        bits per group of 32, after checking that fp16 holds both exactly."""
        key = keys[(e, j, "weight_scale")]
        s = as_float32(mapped(key), self.tensors[key][1]["dtype"])
        g = self._group_size(K)
        if self.symmetric:
            v = np.full(s.shape, 8.0, np.float32)
        else:
            zkey = keys[(e, j, "weight_zero_point")]
            words = mapped(zkey).view(np.uint32)  # [ceil(N / 8), groups]: zero point of row 8w + i at bits 4i
            nib = (words[:, None, :] >> (4 * np.arange(8, dtype=np.uint32))[None, :, None]) & 0xF
            v = nib.reshape(-1, s.shape[1])[:N].astype(np.float32)
        d, m = s, -s * v
        for name, a in (("scale", d), ("scale * (zero point + 8)", m)):
            h = a.astype(np.float16)
            bad = ~np.isfinite(a) | (h.astype(np.float32) != a)
            if bad.any():
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ConversionError(f"{key}{list(at)}: {name} = {float(a[at])!r} is not an fp16 value, which int4_g32 "
                                      "holds exactly: bf16 and fp16 scales from 2^-17 to 8188 of symmetric releases are "
                                      "(an asymmetric zero point times a bf16 scale can need 12 significant bits)")
        reps = g // GROUP
        d16 = np.repeat(d.astype(np.float16), reps, axis=1)[:, :-(-K // GROUP)]
        m16 = np.repeat(m.astype(np.float16), reps, axis=1)[:, :-(-K // GROUP)]
        return np.ascontiguousarray(d16).view(np.uint16), np.ascontiguousarray(m16).view(np.uint16)
