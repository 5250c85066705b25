"""What the machine's limits imply for a model: decode tokens/s bounded by read bandwidth alone,
and the instruction family that bounds each method's prefill at the active tier.

Used by ``python -m kt_kernel.doctor`` (its prediction section) and the benchmarks (their
bounds beside the measured figures).
"""
from __future__ import annotations

from dataclasses import dataclass

from kt_kernel import _ext
from kt_kernel.formats import formats
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, INTERMEDIATE_FIELDS, moe_layer_indices, text_config


@dataclass(frozen=True)
class ModelShape:
    """The routed-expert part of a MoE model, all that bounds decode by bandwidth."""

    name: str
    moe_layers: int
    hidden: int  # H
    intermediate: int  # I, per expert
    experts_per_token: int  # K, routed
    experts: int | None = None  # E, informational

    def weights_per_expert(self) -> int:
        """gate [I, H] + up [I, H] + down [H, I]."""
        return 3 * self.hidden * self.intermediate


# The protocol's models (docs/benchmark_protocol.md): routed experts only.
PRESETS: dict[str, ModelShape] = {
    "qwen3-30b-a3b": ModelShape("Qwen3-30B-A3B", moe_layers=48, hidden=2048, intermediate=768,
                                experts_per_token=8, experts=128),
    "deepseek-v3": ModelShape("DeepSeek-V3 / Kimi-K2", moe_layers=58, hidden=7168, intermediate=2048,
                              experts_per_token=8, experts=256),
    "mixtral-8x7b": ModelShape("Mixtral-8x7B", moe_layers=32, hidden=4096, intermediate=14336,
                               experts_per_token=2, experts=8),
}
PRESET_ALIASES = {"kimi-k2": "deepseek-v3", "qwen3": "qwen3-30b-a3b", "mixtral": "mixtral-8x7b"}

# Which probe family bounds each method's prefill, best first; the first one available at the active
# tier wins. At the amx tier prefill runs on tiles: integer formats tdpbusd (int4_g32's tdpbsud
# runs at the same rate), BF16 tdpbf16ps. Below it, integer formats run vpdpbusd where the tier
# has VNNI, else vpmaddubsw; BF16 runs vdpbf16ps where the tier has AVX512-BF16, else fp32 FMA.
# aarch64 (only its families exist there): at the sve tier the SVE rows (SDOT; BF16 by fp32 FMLA);
# at neon_i8mm and neon_bf16 the row-pair tiles (SMMLA; BFMMLA from neon_bf16); at neon_dotprod
# SDOT; at neon, BF16 by fp32 FMLA and the integer formats by SMLAL, which has no probe family.
PEAK_FAMILIES = {
    "int": ("int8_tdpbusd_tmm", "int8_vpdpbusd_zmm", "int8_pmaddubsw_zmm", "int8_pmaddubsw_ymm",
            "int8_sdot_z", "int8_smmla_q", "int8_sdot_q"),
    "BF16": ("bf16_tdpbf16ps_tmm", "bf16_dpbf16ps_zmm", "fp32_fma_zmm", "fp32_fma_ymm",
             "fp32_fmla_z", "bf16_bfmmla_q", "fp32_fmla_q"),
}
INT_METHODS = tuple(f["method"] for f in formats() if f["int_dot"])


def peak_family(method: str, families: dict | None = None, int_dot: bool | None = None) -> str | None:
    """The instruction family a method's kernels use at the active tier, or None (generic tier).
    `families`: probe_peaks()["families"] or _ext.probe_families() (the default). int_dot: whether
    the kernels multiply integers; by default whether the method's format does (LLAMAFILE's formats
    are a GGUF file's: pass the int_dot of their records)."""
    families = _ext.probe_families() if families is None else families
    if int_dot is None:
        int_dot = method in INT_METHODS
    for name in PEAK_FAMILIES["int" if int_dot else "BF16"]:
        if families.get(name, {}).get("available"):
            return name
    return None


def bytes_per_weight(method: str) -> float:
    """From the format table: bits_per_weight / 8, scales included."""
    for f in formats():
        if f["method"] == method:
            return f["bits_per_weight"] / 8
    raise KeyError(f"method {method!r} is not in kt_kernel.formats()")


def bytes_per_token(shape: ModelShape, bpw: float) -> float:
    """Expert weight bytes one decode token reads: moe_layers x K experts x 3HI x bytes/weight."""
    return shape.moe_layers * shape.experts_per_token * shape.weights_per_expert() * bpw


def predict_decode_tok_s(shape: ModelShape, bpw: float, bandwidth_gbps: float) -> float:
    """Upper bound of decode tokens/s from read bandwidth alone (routed experts only)."""
    return bandwidth_gbps * 1e9 / bytes_per_token(shape, bpw)


def shape_from_hf_config(cfg: dict, name: str = "config.json") -> ModelShape:
    """A ModelShape from a Hugging Face config.json (Qwen3-MoE, DeepSeek-V3/Kimi-K2, Mixtral and
    alikes). Raises ValueError naming the fields it could not find."""
    cfg = text_config(cfg)

    def first(*keys):
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        return None

    hidden = first("hidden_size")
    inter = first(*INTERMEDIATE_FIELDS)
    k = first("num_experts_per_tok", "num_experts_per_token", "moe_topk")
    layers = first("num_hidden_layers")
    experts = first(*EXPERT_COUNT_FIELDS)
    missing = [n for n, v in [("hidden_size", hidden), ("moe_intermediate_size or intermediate_size", inter),
                              ("num_experts_per_tok", k), ("num_hidden_layers", layers)] if v is None]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}; pass --hidden --intermediate "
                         "--experts-per-token --moe-layers instead")
    moe_layers = len(moe_layer_indices(cfg, int(layers)))
    return ModelShape(cfg.get("model_type", name), moe_layers=moe_layers, hidden=int(hidden),
                      intermediate=int(inter), experts_per_token=int(k),
                      experts=None if experts is None else int(experts))
