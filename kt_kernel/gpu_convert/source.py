"""A Hugging Face checkpoint read one decoder layer at a time, for sequential calibration.

The model is built from config.json on the meta device (no memory). Only the token embedding and
the rotary embedding are made real; the inputs of every decoder layer come from running the
model's own forward once with each layer replaced by a recorder, which keeps the keyword
arguments the model hands that layer (attention mask, position embeddings: each architecture
computes its own) and passes the hidden states through. ``load_layer(i)`` then makes layer i
real in fp32 from the checkpoint's memory maps (the routed experts' per-expert tensors stacked
into transformers' fused layout), and ``release_layer(i)`` returns it to the meta device, so that
one decoder layer's weights are resident at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kt_kernel.checkpoint.hf import index_tensors
from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32
from kt_kernel.models.architectures import architecture
from kt_kernel.models.checkpoint import find_experts_modules
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError

__all__ = ["LayerSource"]


class _Recorded(Exception):
    """Raised by the last layer's recorder: the layers' inputs are all known."""


class _Recorder(torch.nn.Module):
    def __init__(self, store: dict, index: int, last: bool):
        super().__init__()
        self.store, self.index, self.last = store, index, last

    def forward(self, hidden_states, *args, **kwargs):
        self.store[self.index] = (hidden_states, args, kwargs)
        if self.last:
            raise _Recorded
        return hidden_states


class LayerSource:
    """The decoder layers of the checkpoint in ``path``, made real one at a time (fp32, CPU)."""

    def __init__(self, path, config, fp8_block=None):
        from kt_kernel.models.checkpoint import _meta_model

        self.path = Path(path)
        self.config = config
        self.arch = architecture(config.model_type)
        if self.arch.expert_layout != "per_expert":
            raise UnsupportedModelError(
                f"{self.path}: {self.arch.label} stores its experts fused ({self.arch.expert_layout}); GPU-side GPTQ "
                "writes per-expert Linear weights, for the architectures "
                "qwen3_moe, deepseek_v3 and mixtral")
        self.model = _meta_model(config, self.path)
        self.inner = self.model.model
        self.layers = self.inner.layers
        self.index = index_tensors(self.path, CheckpointError)
        self.maps = MappedFolder(self.path, self.index.tensors)
        # an FP8 release (DeepSeek-V3/R1, Kimi-K2): e4m3 weights with weight_scale_inv per block
        self.fp8_block = fp8_block
        self.experts = {layer: name for layer, name, _ in find_experts_modules(self.model)}
        self._embed_ready = False  # the embedding and rotary tables made real (layer_inputs' first call)

    def close(self) -> None:
        self.maps.close()

    # ---- tensors -----------------------------------------------------------------------------
    def stored(self, key: str) -> torch.Tensor:
        """The checkpoint tensor ``key`` in fp32: F32, F16 or BF16 as stored, or an FP8 release's
        e4m3 weight times its weight_scale_inv blocks (torch's float8_e4m3fn decoding)."""
        if key not in self.index.tensors:
            raise CheckpointError(f"{self.path} has no tensor {key}")
        meta = self.index.tensors[key][1]
        if meta["dtype"] == "F8_E4M3" and self.fp8_block is not None:
            from kt_kernel.checkpoint.hf import as_torch, dequantize_fp8

            scale_key = key + "_scale_inv"
            if scale_key not in self.index.tensors:
                raise CheckpointError(f"{key} is F8_E4M3 but {self.path} has no {scale_key}")
            q = as_torch(np.array(self.maps.array(key)), meta["dtype"])  # a private copy: the map is read-only
            return dequantize_fp8(q, self.stored(scale_key), self.fp8_block)
        if meta["dtype"] not in ("F32", "F16", "BF16"):
            raise CheckpointError(f"{key} in {self.path} is {meta['dtype']}; GPTQ takes F32, F16 or BF16 checkpoints "
                                  "and FP8 releases")
        return torch.from_numpy(np.array(as_float32(self.maps.array(key), meta["dtype"]))).reshape(meta["shape"])

    def stored_dtype(self, key: str) -> str:
        return self.index.tensors[key][1]["dtype"]

    def expert_key(self, layer: int, expert: int, proj: int) -> str:
        return self.arch.expert_key(layer, expert, proj)

    def checkpoint_key(self, name: str) -> str:
        """The checkpoint key of a transformers parameter name (outside the routed experts)."""
        key = self.arch.checkpoint_name(name)
        return key if key in self.index.tensors else name

    # ---- modules -----------------------------------------------------------------------------
    def _materialize(self, module: torch.nn.Module, prefix: str) -> None:
        module.to_empty(device="cpu")
        module.float()
        for name, t in module.state_dict().items():
            t.copy_(self.stored(self.checkpoint_key(f"{prefix}{name}")).reshape(t.shape))

    def layer_inputs(self, input_ids: torch.Tensor) -> tuple:
        """(hidden states entering layer 0 [1, L, H] fp32, per-layer keyword arguments) for one
        sample's ``input_ids`` [L]: the arguments are those of every sample of that length."""
        if not self._embed_ready:
            self._materialize(self.inner.embed_tokens, "model.embed_tokens.")
            rotary = getattr(self.inner, "rotary_emb", None)
            if rotary is not None:
                self.inner.rotary_emb = type(rotary)(config=self.config)
            self._embed_ready = True
        store = {}
        real = list(self.layers)
        n = len(real)
        for i in range(n):
            self.layers[i] = _Recorder(store, i, i == n - 1)
        try:
            with torch.no_grad():
                self.inner(input_ids=input_ids.reshape(1, -1), use_cache=False)
        except _Recorded:
            pass
        finally:
            for i in range(n):
                self.layers[i] = real[i]
        return store[0][0].float(), [store[i][1:] for i in range(n)]

    def load_layer(self, i: int) -> torch.nn.Module:
        """Decoder layer ``i`` made real, fp32, from the checkpoint."""
        layer = self.layers[i]
        layer.to_empty(device="cpu")
        layer.float()
        experts = self.experts.get(i)
        prefix = f"model.layers.{i}."
        local = experts[len(prefix):] + "." if experts else None
        missing_buffers = {n for n, _ in layer.named_buffers()} - set(layer.state_dict())
        if missing_buffers:
            raise UnsupportedModelError(f"decoder layer {i} holds buffers that are not in the checkpoint "
                                        f"({sorted(missing_buffers)[0]}); sequential calibration cannot rebuild them")
        with torch.no_grad():
            for name, t in layer.state_dict().items():
                if local and name.startswith(local) and name[len(local):] in ("gate_up_proj", "down_proj"):
                    self._load_experts(i, name[len(local):], t)
                else:
                    t.copy_(self.stored(self.checkpoint_key(prefix + name)).reshape(t.shape))
        return layer

    def _load_experts(self, layer: int, which: str, t: torch.Tensor) -> None:
        E = t.shape[0]
        for e in range(E):
            if which == "down_proj":
                t[e].copy_(self.stored(self.expert_key(layer, e, 2)))
            else:
                I = t.shape[1] // 2
                t[e, :I].copy_(self.stored(self.expert_key(layer, e, 0)))
                t[e, I:].copy_(self.stored(self.expert_key(layer, e, 1)))

    def release_layer(self, i: int) -> None:
        self.layers[i].to("meta")
