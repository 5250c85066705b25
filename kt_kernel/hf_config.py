"""What kt_kernel reads from a Hugging Face config.json, in one place: the field names real MoE
configs use for the expert geometry, and which decoder layers are MoE layers."""
from __future__ import annotations

import json
from pathlib import Path

# routed experts per MoE layer: DeepSeek-V3/Kimi-K2, Qwen-MoE, Mixtral, others
EXPERT_COUNT_FIELDS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")
# expert intermediate size: a separate field where the model also has dense MLPs
INTERMEDIATE_FIELDS = ("moe_intermediate_size", "intermediate_size")


def text_config(raw: dict) -> dict:
    """The language model's fields: multimodal configs nest them under text_config."""
    cfg = dict(raw)
    if isinstance(raw.get("text_config"), dict):
        cfg.update(raw["text_config"])
    return cfg


def moe_layer_indices(cfg: dict, num_layers: int) -> list[int]:
    """Decoder layers whose MLP is an MoE block: DeepSeek's first_k_dense_replace and
    moe_layer_freq, Qwen's decoder_sparse_step and mlp_only_layers; every layer otherwise (Mixtral)."""
    dense_first = int(cfg.get("first_k_dense_replace") or 0)
    freq = int(cfg.get("moe_layer_freq") or 1)
    step = int(cfg.get("decoder_sparse_step") or 1)
    mlp_only = set(cfg.get("mlp_only_layers") or [])
    return [i for i in range(num_layers)
            if i >= dense_first and (i - dense_first) % freq == 0 and i not in mlp_only and (i + 1) % step == 0]


def read_config(path, error=ValueError) -> dict:
    """The config.json of the model folder ``path``, as a dict; ``error`` (a ValueError subclass
    of the caller's) names the folder or file when it is missing or not JSON."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        raise error(f"{path} has no config.json: not a Hugging Face model folder")
    try:
        return json.loads(cfg_file.read_text())
    except ValueError as e:
        raise error(f"{cfg_file} is not valid JSON: {e}") from e
