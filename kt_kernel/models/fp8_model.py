"""Whole MoE models from FP8 releases (DeepSeek-V3/R1, Kimi-K2, Qwen3-*-FP8): a Hugging Face folder
whose linear weights are e4m3 with ``weight_scale_inv`` per block of ``weight_block_size``.
transformers' own FP8 integration needs a GPU; here every tensor outside the routed experts is
decoded (torch's float8_e4m3fn times the block scales) into the model's dtype on the CPU, and the
routed experts run from the release's bytes as they are stored (method FP8,
:func:`kt_kernel.integrations.transformers.load_fp8_model`).

    path = write_fp8_release(tiny_model_folder, tmp / "fp8")   # the tests' releases
    model = load_fp8_model(path, num_gpu_experts=4)
    ref = load_fp8_reference(path)                              # the whole release decoded, fp32
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from kt_kernel.checkpoint.hf import HFCheckpoint, dequantize_fp8, open_hf_checkpoint, quantize_fp8
from kt_kernel.models.architectures import ARCHITECTURES
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError

__all__ = ["fp8_state_dict", "fp8_expert_weights", "write_fp8_release", "FP8_BLOCK"]

FP8_BLOCK = (128, 128)


def _release(path) -> HFCheckpoint:
    ckpt = open_hf_checkpoint(path)
    if ckpt.dtype != "F8_E4M3":
        raise CheckpointError(f"{path}: its routed experts are {ckpt.dtype}, not an FP8 release's F8_E4M3; load it with "
                              "load_model")
    return ckpt


def fp8_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` outside its routed
    experts and tied output, read from the release at ``path``: e4m3 tensors decoded with their
    ``weight_scale_inv``, the others converted."""
    from kt_kernel.models.checkpoint import expert_parameter_names, find_experts_modules

    from kt_kernel.models.architectures import architecture

    ckpt = _release(path)
    arch = architecture(model.config.model_type)
    experts = expert_parameter_names(find_experts_modules(model))
    tied = "lm_head.weight" if model.config.tie_word_embeddings else None
    out = {}
    for name, t in model.state_dict().items():
        if name in experts or name == tied:
            continue
        key = arch.checkpoint_name(name)  # Mixtral's checkpoints say block_sparse_moe for mlp
        if key not in ckpt.tensors:
            raise CheckpointError(f"{path} has no tensor {key}, which {type(model).__name__} needs")
        w = ckpt.read(key)
        if w.dtype == torch.float8_e4m3fn:
            scale = key + "_scale_inv"
            if scale not in ckpt.tensors:
                raise CheckpointError(f"{key} is fp8 but {path} has no {scale}")
            w = dequantize_fp8(w, ckpt.read(scale), ckpt.fp8_block)
        if tuple(w.shape) != tuple(t.shape):
            raise CheckpointError(f"{name} has shape {tuple(w.shape)} in {path}, {type(model).__name__} expects "
                                  f"{tuple(t.shape)}")
        out[name] = w.to(dtype)
    return out


def fp8_expert_weights(path, layer: int, experts=None, dtype=torch.float32) -> tuple:
    """(gate_up [n, 2I, H], down [n, H, I]) of ``layer``'s routed experts ``experts`` (default all)
    in the release: torch's decoding of their e4m3 bytes times the block scales, in transformers'
    fused layout."""
    ckpt = _release(path)
    ids = range(ckpt.num_experts) if experts is None else [int(e) for e in experts]
    H, I = ckpt.hidden_size, ckpt.intermediate_size
    gate_up, down = torch.empty(len(ids), 2 * I, H, dtype=dtype), torch.empty(len(ids), H, I, dtype=dtype)
    for i, e in enumerate(ids):
        gate_up[i, :I] = ckpt.expert(layer, e, 0)
        gate_up[i, I:] = ckpt.expert(layer, e, 1)
        down[i] = ckpt.expert(layer, e, 2)
    return gate_up, down


# The tensors DeepSeek-V3's release stores in e4m3: the linear layers' weights (experts, also
# Mixtral's w1/w2/w3 and transformers' fused gate_up_proj/down_proj, attention, dense MLP), not the
# embeddings, norms, routers or output head.
_FP8_TENSOR = re.compile(r"(?:_proj|\.w[123])\.weight$|\.experts\.(?:gate_up_proj|down_proj)$")


def _fp8_eligible(name: str, t: torch.Tensor) -> bool:
    return t.dim() >= 2 and _FP8_TENSOR.search(name) is not None


def write_fp8_release(src, dst, block=FP8_BLOCK) -> Path:
    """An FP8 release of the Hugging Face model in ``src`` (a bf16/fp32 safetensors folder) written
    to ``dst`` as DeepSeek-V3 ships one: each linear weight e4m3 with a ``_scale_inv`` fp32 per
    ``block`` (quantize_fp8), the rest as stored, ``quantization_config`` in config.json. Fused
    expert tensors [E, N, K] are quantized expert by expert, their scales [E, N/bn, K/bk]."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    model_type = json.loads((src / "config.json").read_text()).get("model_type")
    if model_type in ARCHITECTURES and ARCHITECTURES[model_type].expert_layout != "per_expert":
        raise UnsupportedModelError(f"{src}: {model_type} ships no FP8 release (its experts are stored transposed, "
                                    f"with biases); FP8 releases are written for "
                                    f"{', '.join(a for a, r in ARCHITECTURES.items() if r.expert_layout == 'per_expert')}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json" and f.is_file():
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": list(block)}
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    weight_map = {}
    for f in sorted(src.glob("*.safetensors")):
        out = {}
        for name, t in load_file(str(f)).items():
            if not _fp8_eligible(name, t):
                out[name] = t
                continue
            w = t.float()
            if w.dim() == 3:  # fused experts, transformers >= 5: gate_up_proj / down_proj [E, N, K]
                qs = [quantize_fp8(w[e], block) for e in range(w.shape[0])]
                q, s = torch.stack([q for q, _ in qs]), torch.stack([s for _, s in qs])
            else:
                q, s = quantize_fp8(w, block)
            out[name], out[name + "_scale_inv"] = q, s
        save_file(out, str(dst / f.name))
        weight_map.update({k: f.name for k in out})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst
