"""gpt-oss MXFP4 releases loaded as they are stored (method MXFP4).

The format (``quantization_config.quant_method`` ``mxfp4``; gpt-oss-20b/120b): per MoE layer,
fused over the experts,

    mlp.experts.gate_up_proj_blocks  U8 [E, 2I, H / 32, 16]   e2m1 nibbles, element 2j in the low
                                                              nibble of byte j, 2j + 1 in the high
    mlp.experts.gate_up_proj_scales  U8 [E, 2I, H / 32]       ue8m0: the block's scale is 2^(s - 127)
    mlp.experts.gate_up_proj_bias    BF16 [E, 2I]
    mlp.experts.down_proj_blocks     U8 [E, H, I / 32, 16]
    mlp.experts.down_proj_scales     U8 [E, H, I / 32]
    mlp.experts.down_proj_bias       BF16 [E, H]

with gate and up interleaved along 2I: gate channel n is row 2n, up channel n row 2n + 1. A block
is exactly an mxfp4 block (ggml's block_mxfp4: w = 2^(e - 128) * 2 e2m1, the same e), whose nibbles
hold element j and j + 16 in byte j: the load reorders nibbles and splits the rows, nothing is
rounded. The biases and the clamped SwiGLU (``swiglu_limit`` from config.json, alpha 1.702 unless
the config names ``swiglu_alpha``) come with the weights (``layer_biases``, ``activation``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import gpt_oss_activation, index_tensors
from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, INTERMEDIATE_FIELDS, read_config, text_config

__all__ = ["MXFP4_METHOD", "MXFP4Checkpoint", "is_mxfp4", "gpt_oss_blocks", "dequantize_gpt_oss"]

MXFP4_METHOD = "MXFP4"
BLOCK = 32
_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)_(blocks|scales|bias)$")
_BIAS_DTYPES = {"BF16", "F16", "F32"}


def _quantization_config(path) -> dict:
    raw = read_config(path, ConversionError)
    return raw.get("quantization_config") or text_config(raw).get("quantization_config") or {}


def is_mxfp4(path) -> bool:
    """Whether ``path`` is an HF checkpoint whose quantization_config is mxfp4."""
    try:
        return _quantization_config(path).get("quant_method") == "mxfp4"
    except ConversionError:
        return False


def gpt_oss_blocks(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """mxfp4 blocks (17 bytes: the exponent, then element j and j + 16 in byte j) of gpt-oss rows:
    blocks uint8 [N, G, 16] (elements 2j, 2j + 1 in byte j), scales uint8 [N, G] -> uint8 [N, G * 17]."""
    N, G = scales.shape
    lo, hi = blocks & 0x0F, blocks >> 4
    values = np.stack([lo, hi], axis=-1).reshape(N, G, 32)  # element k of each block
    out = np.empty((N, G, 17), np.uint8)
    out[:, :, 0] = scales
    out[:, :, 1:] = values[:, :, :16] | (values[:, :, 16:] << 4)
    return out.reshape(N, G * 17)


_E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def dequantize_gpt_oss(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """fp32 [N, G * 32] of gpt-oss rows: blocks uint8 [N, G, 16], scales uint8 [N, G];
    element 2j of a block is the low nibble of byte j, the scale 2^(s - 127) (exact)."""
    N, G = scales.shape
    v = np.stack([_E2M1[blocks & 0x0F], _E2M1[blocks >> 4]], axis=-1).reshape(N, G, 32)
    return np.ldexp(v, scales.astype(np.int32)[:, :, None] - 127).astype(np.float32).reshape(N, G * 32)


class MXFP4Checkpoint:
    """The routed experts of a gpt-oss MXFP4 checkpoint as the mxfp4 format's blocks."""
    kind = "mxfp4"
    private_parts = ("blocks",)  # rebuilt in memory (nibble order, gate/up split)

    def __init__(self, path, method: str):
        path = Path(path)
        where = str(path / "config.json")
        q = _quantization_config(path)
        if q.get("quant_method") != "mxfp4":
            raise ConversionError(f"{where}: method {method} reads MXFP4 checkpoints (quantization_config.quant_method "
                                  f"'mxfp4', as gpt-oss); this one's is {q.get('quant_method')!r}")
        cfg = text_config(read_config(path, ConversionError))
        E = next((int(cfg[f]) for f in EXPERT_COUNT_FIELDS if cfg.get(f)), None)
        I = next((int(cfg[f]) for f in INTERMEDIATE_FIELDS if cfg.get(f)), None)
        if E is None or I is None or not cfg.get("hidden_size"):
            raise ConversionError(f"{where} lacks the expert count, the expert intermediate size or hidden_size")
        self.path, self.stored_method, self.config = path, MXFP4_METHOD, cfg
        self.num_experts, self.intermediate_size, self.hidden_size = E, I, int(cfg["hidden_size"])
        self.num_layers = int(cfg["num_hidden_layers"])
        # gpt-oss's clamped SwiGLU (0: no clamp)
        self.activation = gpt_oss_activation(cfg)
        self.index = index = index_tensors(path)  # headers only; the converter's float view reuses it
        self.tensors, self.fingerprint = index.tensors, index.fingerprint
        self.keys: dict = {}  # layer -> {(proj, part): key}
        for k in self.tensors:
            m = _KEY.match(k)
            if m and int(m.group(1)) < self.num_layers:
                self.keys.setdefault(int(m.group(1)), {})[(m.group(2), m.group(3))] = k
        self.moe_layers = sorted(self.keys)
        if not self.moe_layers:
            raise ConversionError(f"{path}: no MXFP4 experts (looked for model.layers.L.mlp.experts.gate_up_proj_blocks)")

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        where = str(self.path / "config.json")
        if method != MXFP4_METHOD:
            raise ConversionError(f"{self.path} stores MXFP4 experts, read as they are by method {MXFP4_METHOD}; "
                                  f"method {method!r} is another format")
        for field, got, want in (("hidden_size", self.hidden_size, hidden_size),
                                 ("intermediate_size", self.intermediate_size, intermediate_size),
                                 ("num_experts (num_local_experts)", self.num_experts, num_experts)):
            if want is not None and got != want:
                raise ConversionError(f"{where}: {field} is {got!r} in config.json but {want!r} in this KTMoEWrapper")
        if layer not in self.moe_layers:
            raise ConversionError(f"{self.path}: layer_idx {layer} has no MXFP4 experts (layers with them: "
                                  f"{self.moe_layers})")
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size
        for name, K in (("hidden_size", H), ("intermediate_size", I)):
            if K % BLOCK:
                raise ConversionError(f"{where}: {name}={K} is not a multiple of the MXFP4 block of {BLOCK}")
        keys = self.keys[layer]
        want = {("gate_up_proj", "blocks"): ({"U8"}, [E, 2 * I, H // BLOCK, 16]),
                ("gate_up_proj", "scales"): ({"U8", "F8_E8M0"}, [E, 2 * I, H // BLOCK]),
                ("gate_up_proj", "bias"): (_BIAS_DTYPES, [E, 2 * I]),
                ("down_proj", "blocks"): ({"U8"}, [E, H, I // BLOCK, 16]),
                ("down_proj", "scales"): ({"U8", "F8_E8M0"}, [E, H, I // BLOCK]),
                ("down_proj", "bias"): (_BIAS_DTYPES, [E, H])}
        for (proj, part), (dtypes, shape) in want.items():
            k = keys.get((proj, part))
            if k is None:
                raise ConversionError(f"{self.path}: layer {layer} has no mlp.experts.{proj}_{part}")
            t = self.tensors[k][1]
            if t["shape"] != shape or t["dtype"] not in dtypes:
                raise ConversionError(f"{k} is {t['dtype']} {tuple(t['shape'])}; config.json's sizes make it "
                                      f"{'/'.join(sorted(dtypes))} {tuple(shape)}")

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, "blocks") -> one array per logical expert (None for those not in ``experts``):
        the mxfp4 blocks of gate and up (rows 0::2 and 1::2 of gate_up) and down, uint8 [N, K / 32 * 17]."""
        keys = self.keys[layer]
        maps = MappedFolder(self.path, self.tensors)
        arrays = {(p, "blocks"): [None] * self.num_experts for p in ("gate", "up", "down")}
        try:
            gu_b, gu_s = maps.array(keys[("gate_up_proj", "blocks")]), maps.array(keys[("gate_up_proj", "scales")])
            dn_b, dn_s = maps.array(keys[("down_proj", "blocks")]), maps.array(keys[("down_proj", "scales")])
            for e in sorted(experts):
                arrays[("gate", "blocks")][e] = gpt_oss_blocks(gu_b[e, 0::2], gu_s[e, 0::2])
                arrays[("up", "blocks")][e] = gpt_oss_blocks(gu_b[e, 1::2], gu_s[e, 1::2])
                arrays[("down", "blocks")][e] = gpt_oss_blocks(dn_b[e], dn_s[e])
            yield arrays
        finally:
            arrays.clear()
            maps.close()

    def layer_biases(self, layer: int) -> tuple:
        """fp32 (gate [E, I], up [E, I], down [E, H]) biases of every logical expert."""
        keys = self.keys[layer]
        maps = MappedFolder(self.path, self.tensors)
        try:
            def bias(part):
                k = keys[(part, "bias")]
                return np.array(as_float32(maps.array(k), self.tensors[k][1]["dtype"]), np.float32)
            gu, dn = bias("gate_up_proj"), bias("down_proj")
            return np.ascontiguousarray(gu[:, 0::2]), np.ascontiguousarray(gu[:, 1::2]), dn
        finally:
            maps.close()
