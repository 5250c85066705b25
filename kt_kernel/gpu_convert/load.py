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
_TORCH = {"I32": torch.int32, "I64": torch.int64, "I8": torch.int8, "U8": torch.uint8, "BF16": torch.bfloat16,
          "F16": torch.float16, "F32": torch.float32}


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
        meta = self.index.tensors[key][1]
        raw = np.array(self.maps.array(key))
        if meta["dtype"] == "BF16":
            return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).reshape(meta["shape"])
        return torch.from_numpy(raw).to(_TORCH[meta["dtype"]]).reshape(meta["shape"])

    def weight(self, base: str) -> torch.Tensor:
        """``base.weight`` as stored, or decompressed from its pack-quantized parts; fp32."""
        if f"{base}.weight" in self.index.tensors:
            return self.tensor(f"{base}.weight").float()
        if f"{base}.weight_packed" not in self.index.tensors:
            raise CheckpointError(f"{self.path} has neither {base}.weight nor {base}.weight_packed")
        parts = {p: self.tensor(f"{base}.{p}") for p in _PARTS if f"{base}.{p}" in self.index.tensors}
        return self.compressor.decompress(parts, self.scheme)["weight"].float()

    def close(self):
        self.maps.close()


def decompressed_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` (its tied output
    aside), from the compressed-tensors checkpoint at ``path``."""
    from kt_kernel.models.architectures import architecture
    from kt_kernel.models.checkpoint import find_experts_modules

    path = Path(path)
    arch = architecture(model.config.model_type)
    experts = {f"{name}.{p}": (layer, p) for layer, name, _ in find_experts_modules(model)
               for p in ("gate_up_proj", "down_proj")}
    tied = "lm_head.weight" if model.config.tie_word_embeddings else None
    reader = _Reader(path)
    out = {}
    try:
        for name, t in model.state_dict().items():
            if name == tied:
                continue
            if name in experts:
                layer, which = experts[name]
                E = t.shape[0]
                if which == "down_proj":
                    w = torch.stack([reader.weight(arch.expert_key(layer, e, 2)[:-len(".weight")]) for e in range(E)])
                else:
                    w = torch.stack([torch.cat([reader.weight(arch.expert_key(layer, e, p)[:-len(".weight")])
                                                for p in (0, 1)]) for e in range(E)])
            else:
                key = arch.checkpoint_name(name)
                if name.endswith(".weight") and f"{key}.weight" not in reader.index.tensors and \
                        f"{key[:-len('.weight')]}.weight_packed" in reader.index.tensors:
                    w = reader.weight(key[:-len(".weight")])
                elif key in reader.index.tensors:
                    w = reader.tensor(key).float()
                else:
                    raise CheckpointError(f"{path} has no tensor {key}, which {type(model).__name__} needs")
            if tuple(w.shape) != tuple(t.shape):
                raise CheckpointError(f"{name}: {tuple(w.shape)} in {path}, {type(model).__name__} expects "
                                      f"{tuple(t.shape)}")
            out[name] = w.to(dtype)
    finally:
        reader.close()
    return out
