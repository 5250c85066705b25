"""A compressed-tensors checkpoint written by convert_gpu_weights, decompressed into a transformers
model's state dict by compressed-tensors' own decompressor.

transformers 5.25 loads such a checkpoint itself (``from_pretrained``), except that it stacks
asymmetric routed experts without their zero points and fails; this reader takes every
pack-quantized weight (``weight_packed``, ``weight_scale``, ``weight_shape``, ``weight_zero_point``)
through ``PackedQuantizationCompressor.decompress`` with the checkpoint's scheme, stacks the
per-expert weights into transformers' fused ``gate_up_proj [E, 2I, H]`` / ``down_proj [E, H, I]``,
and reads every other tensor as stored.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kt_kernel.models.errors import CheckpointError

__all__ = ["decompressed_state_dict"]

_PARTS = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")


class _Reader:
    def __init__(self, path: Path):
        from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
        from compressed_tensors.quantization import QuantizationConfig

        from kt_kernel.checkpoint.hf import index_tensors
        from kt_kernel.checkpoint.safetensors_io import MappedFolder

        cfg = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
        if cfg.get("quant_method") != "compressed-tensors" or cfg.get("format") != "pack-quantized":
            raise CheckpointError(f"{path}: config.json's quantization_config is not compressed-tensors pack-quantized "
                                  "(convert_gpu_weights.py writes one)")
        groups = QuantizationConfig.model_validate(cfg).config_groups
        if len(groups) != 1:
            raise CheckpointError(f"{path}: {len(groups)} quantization config groups; this reader takes one")
        self.scheme = next(iter(groups.values()))
        self.compressor = PackedQuantizationCompressor
        self.path = path
        self.index = index_tensors(path, CheckpointError)
        self.maps = MappedFolder(path, self.index.tensors)

    def tensor(self, key: str) -> torch.Tensor:
        from kt_kernel.checkpoint.hf import as_torch

        return as_torch(np.array(self.maps.array(key)), self.index.tensors[key][1]["dtype"])

    def read(self, key: str):
        """Checkpoint key ``key`` in fp32: as stored, or a weight decompressed from its
        pack-quantized parts; None where the checkpoint has neither."""
        base = key[:-len(".weight")] if key.endswith(".weight") else None
        if key not in self.index.tensors and base is not None and f"{base}.weight_packed" in self.index.tensors:
            parts = {p: self.tensor(f"{base}.{p}") for p in _PARTS if f"{base}.{p}" in self.index.tensors}
            return self.compressor.decompress(parts, self.scheme)["weight"].float()
        return self.tensor(key).float() if key in self.index.tensors else None

    def expert(self, key: str) -> torch.Tensor:
        w = self.read(key)
        if w is None:
            raise CheckpointError(f"{self.path} has neither {key} nor {key}_packed")
        return w

    def close(self):
        self.maps.close()


def decompressed_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` (its tied output
    aside), from the compressed-tensors checkpoint at ``path``: the routed experts stacked here,
    the rest through models.checkpoint.stored_state_dict."""
    from kt_kernel.models.architectures import architecture
    from kt_kernel.models.checkpoint import find_experts_modules, stored_state_dict

    path = Path(path)
    arch = architecture(model.config.model_type)
    experts = {f"{name}.{p}": (layer, p) for layer, name, _ in find_experts_modules(model)
               for p in ("gate_up_proj", "down_proj")}
    params = model.state_dict()
    reader = _Reader(path)
    try:
        out = stored_state_dict(path, model, set(experts), dtype, read=reader.read)
        for name, (layer, which) in experts.items():
            E = params[name].shape[0]
            if which == "down_proj":
                w = torch.stack([reader.expert(arch.expert_key(layer, e, 2)) for e in range(E)])
            else:
                w = torch.stack([torch.cat([reader.expert(arch.expert_key(layer, e, p)) for p in (0, 1)])
                                 for e in range(E)])
            if tuple(w.shape) != tuple(params[name].shape):
                raise CheckpointError(f"{name}: {tuple(w.shape)} in {path}, {type(model).__name__} expects "
                                      f"{tuple(params[name].shape)}")
            out[name] = w.to(dtype)
    finally:
        reader.close()
    return out
