"""Whole gpt-oss models from MXFP4 releases: a Hugging Face folder whose routed experts are e2m1
blocks with ue8m0 scales (``mlp.experts.gate_up_proj_blocks`` / ``_scales``, ``down_proj_*``;
kt_kernel/checkpoint/mxfp4.py) and every other tensor bf16. transformers' MXFP4 integration
needs triton kernels or dequantizes everything; here the routed experts run from the release's
blocks as they are stored (method MXFP4,
:func:`kt_kernel.integrations.transformers.load_mxfp4_model`) and the rest loads as it is.

    path = write_mxfp4_release(tiny_gpt_oss_folder, tmp / "mxfp4")   # the tests' releases
    model = load_mxfp4_model(path, num_gpu_experts=4)
    ref = load_mxfp4_reference(path)                                  # the experts decoded, fp32
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from kt_kernel.checkpoint.mxfp4 import MXFP4Checkpoint, MXFP4_METHOD, dequantize_gpt_oss, is_mxfp4
from kt_kernel.checkpoint.safetensors_io import MappedFolder
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError

__all__ = ["mxfp4_state_dict", "mxfp4_expert_weights", "write_mxfp4_release", "quantize_gpt_oss"]

def _check_release(path) -> None:
    if not is_mxfp4(path):
        raise CheckpointError(f"{path}: config.json's quantization_config is not mxfp4; load it with load_model")


def _release(path) -> MXFP4Checkpoint:
    _check_release(path)
    return MXFP4Checkpoint(path, MXFP4_METHOD)


def mxfp4_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` but its routed
    experts' weights (their biases included), read from the release at ``path``."""
    from kt_kernel.models.checkpoint import find_experts_modules, stored_state_dict

    _check_release(path)
    weights = {f"{name}.{p}" for _, name, _ in find_experts_modules(model) for p in ("gate_up_proj", "down_proj")}
    return stored_state_dict(path, model, weights, dtype)


def mxfp4_expert_weights(path, layer: int, experts=None, dtype=torch.float32) -> tuple:
    """(gate_up [n, H, 2I], down [n, I, H]) of ``layer``'s routed experts ``experts`` (default all)
    in the release, decoded, in gpt-oss's module layout (transposed, gate and up interleaved)."""
    ckpt = _release(path)
    ckpt.check_layer(layer, MXFP4_METHOD, ckpt.hidden_size, ckpt.intermediate_size)
    ids = list(range(ckpt.num_experts)) if experts is None else [int(e) for e in experts]
    keys = ckpt.keys[layer]
    maps = MappedFolder(ckpt.path, ckpt.tensors)
    try:
        def decoded(proj):  # [n, K, N]
            b, s = maps.array(keys[(proj, "blocks")]), maps.array(keys[(proj, "scales")])
            out = torch.empty(len(ids), s.shape[2] * 32, s.shape[1])
            for i, e in enumerate(ids):
                out[i] = torch.from_numpy(dequantize_gpt_oss(b[e], s[e])).transpose(0, 1)
            return out
        return decoded("gate_up_proj").to(dtype), decoded("down_proj").to(dtype)
    finally:
        maps.close()


def quantize_gpt_oss(w: np.ndarray) -> tuple:
    """Our mxfp4 quantization of w fp32 [N, K] as gpt-oss stores it: blocks uint8 [N, K/32, 16]
    (element 2j in the low nibble of byte j) and ue8m0 scales uint8 [N, K/32]."""
    from kt_kernel import _ext

    N, K = w.shape
    blocks = _ext.quantize("mxfp4", np.ascontiguousarray(w, np.float32))["blocks"].reshape(N, K // 32, 17)
    qs = blocks[:, :, 1:]
    values = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element k of each block
    return (values[:, :, 0::2] | (values[:, :, 1::2] << 4)).astype(np.uint8), blocks[:, :, 0].copy()


def write_mxfp4_release(src, dst) -> Path:
    """An MXFP4 release of the gpt-oss model in ``src`` (a bf16/fp32 safetensors folder, the experts
    fused as transformers saves them) written to ``dst`` as gpt-oss ships: each expert's weights
    quantized to mxfp4 (kt_kernel's quantizer) into ``*_blocks`` / ``*_scales``, the biases and
    every other tensor as stored, ``quantization_config`` mxfp4 in config.json."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("model_type") != "gpt_oss":
        raise UnsupportedModelError(f"{src}: model_type {cfg.get('model_type')!r}; MXFP4 releases are gpt-oss's")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json" and f.is_file():
            shutil.copy(f, dst / f.name)
    cfg["quantization_config"] = {"quant_method": "mxfp4",
                                  "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                             "model.embed_tokens", "lm_head"]}
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    weight_map = {}
    for f in sorted(src.glob("*.safetensors")):
        out = {}
        for name, t in load_file(str(f)).items():
            if not name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
                out[name] = t
                continue
            w = t.float().transpose(1, 2).numpy()  # [E, K, N] as the module holds it -> [E, N, K] rows
            parts = [quantize_gpt_oss(w[e]) for e in range(w.shape[0])]
            out[name + "_blocks"] = torch.from_numpy(np.stack([b for b, _ in parts]))
            out[name + "_scales"] = torch.from_numpy(np.stack([s for _, s in parts]))
        save_file(out, str(dst / f.name))
        weight_map.update({k: f.name for k in out})
    if (src / "model.safetensors.index.json").exists():
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst
