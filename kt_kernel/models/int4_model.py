"""Whole MoE models from int4 releases: compressed-tensors (Kimi-K2-Thinking's scheme: the routed
experts pack-quantized to 4-bit ints, symmetric groups of 32 with bf16 scales, everything else
bf16) and AutoGPTQ (every linear layer of the decoder layers GPTQ-packed but the routers, as the
*-GPTQ-Int4 MoE models ship): the routed experts run from the release's packed words as they are
stored (methods RAWINT4 and GPTQ_INT4, :func:`kt_kernel.integrations.transformers.load_int4_model`),
the rest loads as it is stored, AutoGPTQ's packed layers decoded (scale * (q - zero point)).

    path = write_int4_release(tiny_model_folder, tmp / "int4")   # compressed-tensors' own compressor
    path = write_autogptq_release(tiny_model_folder, tmp / "gptq")
    model = load_int4_model(path, num_gpu_experts=4)
    ref = load_int4_reference(path)                               # the experts decoded, fp32
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from kt_kernel.checkpoint.autogptq import AutoGptqCheckpoint, decode_gptq_linear, gptq_pack, is_autogptq_int4
from kt_kernel.checkpoint.ct_int4 import INT4_RELEASE_METHODS, CompressedInt4Checkpoint, decode_int4_zp, is_compressed_int4
from kt_kernel.checkpoint.int4_release import Int4Release
from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32
from kt_kernel.models.architectures import ARCHITECTURES
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError

__all__ = ["int4_state_dict", "int4_expert_weights", "write_autogptq_release", "write_int4_release"]


def _release(path) -> Int4Release:
    if is_autogptq_int4(path):
        return AutoGptqCheckpoint(path, INT4_RELEASE_METHODS[1])
    if not is_compressed_int4(path):
        raise CheckpointError(f"{path}: config.json's quantization_config is neither compressed-tensors pack-quantized "
                              "nor AutoGPTQ (gptq); load it with load_model")
    return CompressedInt4Checkpoint(path, INT4_RELEASE_METHODS[0])


def int4_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` outside its routed
    experts and tied output, read from the release at ``path`` (stored unquantized there)."""
    from kt_kernel.models.checkpoint import expert_parameter_names, find_experts_modules, stored_state_dict

    skip = expert_parameter_names(find_experts_modules(model))
    if not is_autogptq_int4(path):  # compressed-tensors: everything outside the experts is stored as it is
        return stored_state_dict(path, model, skip, dtype)
    ckpt = AutoGptqCheckpoint(path, INT4_RELEASE_METHODS[1])
    tensors, maps = ckpt.tensors, MappedFolder(path, ckpt.tensors)

    def value(key):
        return as_float32(maps.array(key), tensors[key][1]["dtype"])

    def read(key):  # as stored, or a GPTQ-packed linear layer decoded
        if key in tensors:
            return torch.from_numpy(np.array(value(key))).reshape(tensors[key][1]["shape"])
        base = key[:-len(".weight")] if key.endswith(".weight") else None
        if base is None or f"{base}.qweight" not in tensors:
            return None
        g_idx = maps.array(f"{base}.g_idx") if f"{base}.g_idx" in tensors else None
        return torch.from_numpy(decode_gptq_linear(maps.array(f"{base}.qweight"), maps.array(f"{base}.qzeros"),
                                                   value(f"{base}.scales"), g_idx, ckpt.zero_offset))
    try:
        return stored_state_dict(path, model, skip, dtype, read=read)
    finally:
        maps.close()


def int4_expert_weights(path, layer: int, experts=None, dtype=torch.float32) -> tuple:
    """(gate_up [n, 2I, H], down [n, H, I]) of ``layer``'s routed experts ``experts`` (default all)
    in the release, decoded (scale * (q - zero point), as the reader hands them to int4_g32_zp:
    d * (u - z) per group of 32), in transformers' fused layout."""
    ckpt = _release(path)
    ids = list(range(ckpt.num_experts)) if experts is None else [int(e) for e in experts]
    H, I = ckpt.hidden_size, ckpt.intermediate_size
    gate_up, down = torch.empty(len(ids), 2 * I, H, dtype=dtype), torch.empty(len(ids), H, I, dtype=dtype)
    with ckpt.layer_arrays(layer, set(ids)) as arrays:
        for i, e in enumerate(ids):
            for proj, dst in (("gate", gate_up[i, :I]), ("up", gate_up[i, I:]), ("down", down[i])):
                dst.copy_(torch.from_numpy(decode_int4_zp(arrays[(proj, "qweight")][e], arrays[(proj, "scale")][e],
                                                          arrays[(proj, "zero")][e])))
    return gate_up, down


def _new_release(src: Path, dst: Path, what: str) -> tuple:
    """(config.json of ``src``, its architecture row), after checking that ``what`` is written for
    it, creating ``dst`` and copying every file of ``src`` but the safetensors and their index."""
    cfg = json.loads((src / "config.json").read_text())
    row = ARCHITECTURES.get(cfg.get("model_type"))
    if row is None or row.expert_layout != "per_expert":
        raise UnsupportedModelError(f"{src}: model_type {cfg.get('model_type')!r}; {what} are written for "
                                    f"{', '.join(a for a, r in ARCHITECTURES.items() if r.expert_layout == 'per_expert')}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json" and f.is_file():
            shutil.copy(f, dst / f.name)
    return cfg, row


def write_int4_release(src, dst, group: int = 32, scale_dtype=torch.bfloat16, symmetric: bool = True) -> Path:
    """A compressed-tensors int4 release of the Hugging Face model in ``src`` (a bf16/fp32
    safetensors folder with per-expert tensors) written to ``dst`` as Kimi-K2-Thinking ships one:
    each routed expert's weights pack-quantized by compressed-tensors' own compressor (4-bit ints,
    symmetric groups of ``group``, ``scale_dtype`` scales: weight_packed, weight_scale,
    weight_shape; asymmetric with ``symmetric`` False, adding weight_zero_point), every other tensor
    as stored, ``quantization_config`` in config.json."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    cfg, row = _new_release(src, dst, "int4 releases")
    args = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group", group_size=group)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                  "config_groups": {"group_0": {"targets": ["re:.*mlp.experts.*"],
                                                                "weights": args.model_dump()}},
                                  "ignore": ["lm_head"]}
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    expert = f".{row.block}.experts."
    weight_map = {}
    for f in sorted(src.glob("*.safetensors")):
        out = {}
        for name, t in load_file(str(f)).items():
            if expert not in name or not name.endswith(".weight"):
                out[name] = t
                continue
            w = t.float()
            blocks = w.reshape(w.shape[0], -1, group)
            scale, zp = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args)
            c = PackedQuantizationCompressor.compress(
                {"weight": w, "weight_scale": scale.to(scale_dtype), "weight_zero_point": zp.to(torch.int8)}, scheme)
            base = name[:-len(".weight")]
            out.update({f"{base}.{part}": v.contiguous() for part, v in c.items()
                        if part != "weight_zero_point" or not symmetric})
        save_file(out, str(dst / f.name))
        weight_map.update({k: f.name for k in out})
    if (src / "model.safetensors.index.json").exists():
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def write_autogptq_release(src, dst, group: int = 32, symmetric: bool = True) -> Path:
    """An AutoGPTQ int4 release of the Hugging Face model in ``src`` (a bf16/fp32 safetensors folder
    with per-expert tensors) written to ``dst`` as the *-GPTQ-Int4 MoE models ship: every linear
    layer of the decoder layers (attention, dense and shared MLPs, routed experts) but the routers
    rounded to nearest in symmetric groups of ``group`` (4-bit q, zero point 8, fp16 scales
    max|w| / 7), or with ``symmetric`` False in asymmetric ones (scale (max - min) / 15 over a
    range holding 0, zero point round(-min / scale) in 1..15, which checkpoint_format gptq stores
    minus one), and packed in AutoGPTQ's layout (checkpoint_format gptq: qweight, qzeros, scales,
    g_idx); a layer whose K is not whole groups, and every other tensor, as stored."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    cfg, _ = _new_release(src, dst, "AutoGPTQ releases")
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False,
                                  "sym": symmetric, "checkpoint_format": "gptq"}
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    weight_map = {}
    for f in sorted(src.glob("*.safetensors")):
        out = {}
        for name, t in load_file(str(f)).items():
            linear = ".layers." in name and name.endswith(".weight") and t.dim() == 2 and not name.endswith(".gate.weight")
            if not linear or t.shape[1] % group or t.shape[1] % 8:
                out[name] = t
                continue
            w = t.float().numpy()
            blocks = w.reshape(w.shape[0], -1, group)
            if symmetric:
                s = (np.abs(blocks).max(-1) / 7).astype(np.float16)
            else:
                lo, hi = np.minimum(blocks.min(-1), 0), np.maximum(blocks.max(-1), 0)
                s = ((hi - lo) / 15).astype(np.float16)
            s[s == 0] = 1
            z = np.full(s.shape, 8) if symmetric else np.clip(np.rint(-lo / s.astype(np.float32)), 1, 15).astype(np.int64)
            q = np.clip(np.rint(blocks / s.astype(np.float32)[..., None]) + z[..., None], 0, 15)
            packed = gptq_pack(q.astype(np.uint8).reshape(w.shape), z, s)
            base = name[:-len(".weight")]
            out.update({f"{base}.{part}": torch.from_numpy(v) for part, v in packed.items()})
        save_file(out, str(dst / f.name))
        weight_map.update({k: f.name for k in out})
    if (src / "model.safetensors.index.json").exists():
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst
