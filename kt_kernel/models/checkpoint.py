"""Check a Hugging Face MoE checkpoint against its config.json before loading it.

transformers fuses the per-expert tensors of a checkpoint (``experts.{e}.gate_proj.weight`` ...)
into ``gate_up_proj [E, 2I, H]`` and ``down_proj [E, H, I]`` while loading; when a tensor is
missing or has the wrong shape, it either fails inside the fusion with a message that names
neither the key nor the config field, or re-initialises the tensor at random and goes on.
:func:`inspect_checkpoint` reads only the safetensors headers and config.json, and raises
:class:`CheckpointError` or :class:`UnsupportedModelError` naming the key and the field first.

The expected tensors come from transformers itself: the model is built from config.json on the
meta device (no memory), its routed-experts modules say which layers are MoE, and its state dict
gives every other tensor's name and shape.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from kt_kernel.checkpoint.hf import index_tensors
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, read_config
from kt_kernel.models._deps import require_transformers
from kt_kernel.models.architectures import ARCHITECTURES, Architecture, architecture
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError

__all__ = ["CheckpointInfo", "TensorMeta", "inspect_checkpoint", "read_tensor_index", "find_experts_modules",
           "expert_parameter_names", "unquantized_config", "stored_state_dict"]

# Expert-count fields of MoE configs in transformers: a config with none of them set is dense.
_FLOAT_DTYPES = ("F32", "BF16", "F16")
_MAX_LISTED = 5
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class TensorMeta:
    dtype: str        # safetensors spelling: F32, BF16, F16, F8_E4M3, ...
    shape: tuple
    file: str


@dataclass
class CheckpointInfo:
    path: Path
    arch: Architecture
    config: object            # the transformers config
    moe_layers: list          # decoder-layer indices that hold routed experts
    num_experts: int
    top_k: int
    hidden_size: int
    intermediate_size: int    # of one routed expert
    tensors: dict             # checkpoint key -> TensorMeta

    def describe(self) -> str:
        return (f"{self.arch.label} ({self.arch.model_type}): {self.config.num_hidden_layers} layers, "
                f"{len(self.moe_layers)} MoE, {self.num_experts} experts top-{self.top_k}, "
                f"hidden {self.hidden_size}, expert intermediate {self.intermediate_size}")


def read_tensor_index(path) -> dict:
    """Checkpoint key -> TensorMeta for every tensor of the safetensors files in ``path``, from the
    HF checkpoint reader's index (kt_kernel.checkpoint.hf: the headers only)."""
    index = index_tensors(path, CheckpointError)
    return {k: TensorMeta(t["dtype"], tuple(t["shape"]), f) for k, (f, t) in index.tensors.items()}


def find_experts_modules(model) -> list:
    """(decoder-layer index, qualified name, module) of every routed-experts module, i.e. every
    module whose class transformers decorates with ``use_experts_implementation`` (which gives
    its instances ``is_transposed``) and which holds the experts' ``down_proj`` tensor."""
    found = []
    for name, module in model.named_modules():
        if hasattr(module, "is_transposed") and isinstance(getattr(module, "down_proj", None), torch.Tensor):
            m = _LAYER_RE.search(name)
            found.append((int(m.group(1)) if m else len(found), name, module))
    return found


def expert_parameter_names(experts: list) -> set:
    """The state-dict names of the routed experts' own tensors (gate_up_proj, down_proj, ...) of
    the modules find_experts_modules returned."""
    return {f"{name}.{p}" for _, name, m in experts for p, _ in m.named_parameters(recurse=False)}


def unquantized_config(path):
    """transformers' config of the release in ``path`` without its quantization_config: kt_kernel
    runs the routed experts as stored and decodes the rest, so transformers must not install its own
    quantized layers (FP8's need a GPU, MXFP4's triton kernels)."""
    config = require_transformers().AutoConfig.from_pretrained(str(path))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def stored_state_dict(path, model, skip: set, dtype=torch.float32, read=None) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` but those in ``skip``
    and its tied output, under their checkpoint names (arch.checkpoint_name): ``read(key)``, an fp32
    tensor or None where the checkpoint has none (default: the tensor as stored, F32, F16 or BF16,
    from the checkpoint in ``path``)."""
    import numpy as np

    from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32

    arch = architecture(model.config.model_type)
    tied = "lm_head.weight" if model.config.tie_word_embeddings else None
    maps = None
    if read is None:
        tensors = index_tensors(path, CheckpointError).tensors
        maps = MappedFolder(path, tensors)

        def read(key):
            if key not in tensors:
                return None
            meta = tensors[key][1]
            return torch.from_numpy(np.array(as_float32(maps.array(key), meta["dtype"]))).reshape(meta["shape"])
    out = {}
    try:
        for name, t in model.state_dict().items():
            if name in skip or name == tied:
                continue
            key = arch.checkpoint_name(name)  # Mixtral's checkpoints say block_sparse_moe for mlp
            w = read(key)
            if w is None:
                raise CheckpointError(f"{path} has no tensor {key}, which {type(model).__name__} needs")
            if tuple(w.shape) != tuple(t.shape):
                raise CheckpointError(f"{key} has shape {tuple(w.shape)} in {path}, {type(model).__name__} expects "
                                      f"{tuple(t.shape)}")
            out[name] = w.to(dtype)
    finally:
        if maps is not None:
            maps.close()
    return out


def _load_config(path: Path):
    cfg_file = path / "config.json"
    raw = read_config(path, CheckpointError)
    model_type = raw.get("model_type")
    if not model_type:
        raise CheckpointError(f"{cfg_file} has no model_type field")
    if model_type not in ARCHITECTURES:
        counts = {f: raw[f] for f in EXPERT_COUNT_FIELDS if raw.get(f)}
        if not counts:
            raise UnsupportedModelError(
                f"{path} is not a Mixture-of-Experts model: config.json (model_type {model_type!r}) has none of "
                f"the expert-count fields {', '.join(EXPERT_COUNT_FIELDS)}; kt_kernel runs the routed experts "
                f"of MoE models ({', '.join(ARCHITECTURES)})")
        field, n = next(iter(counts.items()))
        raise UnsupportedModelError(
            f"model_type {model_type!r} (config.json {field}={n}) is an MoE architecture kt_kernel does not "
            f"support yet; supported: {', '.join(ARCHITECTURES)}")
    arch = architecture(model_type)
    if raw.get("quantization_config"):
        method = raw["quantization_config"].get("quant_method", "?")
        loaders = {"fp8": "load_fp8_model (method FP8)", "mxfp4": "load_mxfp4_model (method MXFP4)",
                   "compressed-tensors": "load_int4_model (method RAWINT4 or GPTQ_INT4)"}
        raise UnsupportedModelError(
            f"config.json has quantization_config (quant_method {method!r}): this loader takes bf16/fp16/fp32 "
            "checkpoints (kt_kernel quantizes the experts itself)" +
            (f"; kt_kernel.integrations.transformers.{loaders[method]} runs this release as it is stored"
             if method in loaders else ""))
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModelError(f"config.json hidden_act={act!r}: kt_kernel's experts compute silu(gate) * up")
    transformers = require_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as e:  # transformers raises many kinds on a bad config
        raise CheckpointError(f"transformers cannot read {cfg_file}: {e}") from e
    return arch, config


def _meta_model(config, path: Path):
    transformers = require_transformers()
    try:
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise CheckpointError(f"transformers cannot build a model from {path / 'config.json'}: {e}") from e


def _problems(kind: str, items: list) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    more = f"; and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{kind}: {shown}{more}"


def inspect_checkpoint(path) -> CheckpointInfo:
    """Checks the checkpoint in ``path`` and describes it. Raises UnsupportedModelError (not MoE,
    unsupported architecture, quantized checkpoint) or CheckpointError (a tensor missing, of the
    wrong shape or dtype), each naming the key and the config field."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder")
    arch, config = _load_config(path)
    meta = _meta_model(config, path)
    experts = find_experts_modules(meta)
    if not experts:
        fields = ", ".join(f"{f}={getattr(config, f, None)!r}" for f in arch.moe_fields)
        raise UnsupportedModelError(
            f"{path} is not a Mixture-of-Experts model: with config.json {fields} no layer has routed experts")
    moe_layers = [layer for layer, _, _ in experts]
    E, I, H = (getattr(config, arch.experts_field), getattr(config, arch.intermediate_field), config.hidden_size)
    tensors = read_tensor_index(path)

    # 1. routed experts, the per-expert keys of real checkpoints
    want = {0: (I, H), 1: (I, H), 2: (H, I)}
    dims = f"{arch.intermediate_field}={I} and hidden_size={H}"
    missing, wrong = [], []
    def check(key, shape):
        t = tensors.get(key)
        if t is None:
            missing.append(key)
        elif t.shape != shape:
            wrong.append(f"{key} has shape {t.shape}, but config.json {dims} make it {shape}")
        elif t.dtype not in _FLOAT_DTYPES:
            wrong.append(f"{key} has dtype {t.dtype}; kt_kernel loads {', '.join(_FLOAT_DTYPES)} experts")
    for layer in moe_layers:
        if arch.expert_layout == "gpt_oss":  # fused over the experts, with biases
            for key, shape in arch.fused_expert_shapes(layer, E, H, I).items():
                check(key, shape)
            continue
        for e in range(E):
            for proj in range(3):
                check(arch.expert_key(layer, e, proj), want[proj])
        prefix = f"model.layers.{layer}.{arch.block}.experts."
        extra = sorted({int(k[len(prefix):].split(".")[0]) for k in tensors
                        if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()} - set(range(E)))
        if extra:
            wrong.append(f"the checkpoint has expert {extra[0]} in layer {layer} ({prefix}{extra[0]}.*), "
                         f"but config.json {arch.experts_field}={E}")
    if wrong:
        raise CheckpointError(_problems(f"{path}: routed-expert tensors disagree with config.json", wrong))
    if missing:
        raise CheckpointError(_problems(
            f"{path}: {len(missing)} routed-expert tensor(s) missing (config.json {arch.experts_field}={E}, "
            f"MoE layers {moe_layers})", [f"no {k}" for k in missing]))

    # 2. every other tensor the model holds, under its checkpoint name
    expert_params = expert_parameter_names(experts)
    tied = "lm_head.weight" if getattr(config, "tie_word_embeddings", False) else None
    missing, wrong = [], []
    for name, t in meta.state_dict().items():
        if name in expert_params or name == tied:
            continue
        key = arch.checkpoint_name(name)
        got = tensors.get(key, tensors.get(name))
        if got is None:
            missing.append(key)
        elif got.shape != tuple(t.shape):
            wrong.append(f"{key} has shape {got.shape}, but config.json makes it {tuple(t.shape)}")
    if wrong:
        raise CheckpointError(_problems(f"{path}: tensors disagree with config.json", wrong))
    if missing:
        raise CheckpointError(_problems(f"{path}: {len(missing)} tensor(s) missing", [f"no {k}" for k in missing]))

    return CheckpointInfo(path=path, arch=arch, config=config, moe_layers=moe_layers, num_experts=E,
                          top_k=config.num_experts_per_tok, hidden_size=H, intermediate_size=I, tensors=tensors)
