"""Whole MoE models in GGUF files, as llama.cpp writes them: every tensor under its llama.cpp name,
the configuration in the architecture's metadata keys. :func:`write_model_gguf` writes a Hugging
Face model as such a file; :func:`gguf_config` and :func:`gguf_state_dict` read one back as a
transformers config and the dequantized tensors of everything outside the routed experts, which
:func:`kt_kernel.integrations.transformers.load_gguf_model` puts together with the experts run
from the file's blocks (method LLAMAFILE).

What the file holds and how it maps to transformers (facts of llama.cpp's converter, used by the
writer and undone by the reader):

* names: gguf's own tensor-name map (``gguf.get_tensor_name_map``) of the architecture;
* Mixtral (architecture ``llama``): q_proj and k_proj rows are permuted per head for llama.cpp's
  adjacent-pair rotary embedding (transformers rotates the two halves of each head);
* DeepSeek-V3 (``deepseek2``): ``kv_b_proj`` is stored split per head into ``attn_k_b``
  (transposed, [n_head, kv_lora_rank, qk_nope_head_dim]) and ``attn_v_b``
  ([n_head, v_head_dim, kv_lora_rank]); the older single ``attn_kv_b`` is read too. The metadata
  describes the MLA cache (``head_count_kv`` 1, ``key_length`` kv_lora_rank + rope dims) and the
  heads in ``key_length_mla`` / ``value_length_mla``;
* one-dimensional tensors (norms, the score-correction bias) are F32, as llama.cpp keeps them.

    files = write_model_gguf(path, tmp / "model.gguf", gate_up="q4_K", down="q6_K", other="q8_0", shards=2)
    model = load_gguf_model(files[0], num_gpu_experts=8)      # kt_kernel.integrations.transformers
    ref = load_gguf_reference(files[0])                         # the whole file dequantized, fp32

:func:`write_experts_gguf` writes the routed experts alone, for a model whose other weights stay
in its Hugging Face folder (``load_model(path, "LLAMAFILE", weight_path=file)``). The blocks come
from kt_kernel's quantizers.

The reader takes every field the model needs from the metadata and the tensors' shapes (the
vocabulary from ``token_embd``, tied embeddings from a missing ``output``), never from a Hugging
Face folder. Whatever it cannot express raises UnsupportedModelError naming the key.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kt_kernel import _ext
from kt_kernel.checkpoint.gguf import PROJ_TENSORS
from kt_kernel.formats import gguf_formats
from kt_kernel.models.architectures import ARCHITECTURES
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError
from kt_kernel.models.tokenizer import TINY_MARKER

__all__ = ["GGUF_ARCHITECTURES", "write_model_gguf", "write_experts_gguf", "gguf_config", "gguf_state_dict",
           "gguf_expert_weights", "is_model_gguf", "TOKENIZER_KEY"]

# model_type -> llama.cpp's architecture name (the prefix of its metadata keys)
GGUF_ARCHITECTURES = {"qwen3_moe": "qwen3moe", "deepseek_v3": "deepseek2", "mixtral": "llama"}
# the tiny models' tokenizer (kt_kernel.models.tokenizer), named in the GGUF files written of them
TOKENIZER_KEY = "kt_kernel.tokenizer"

# (metadata key after "<arch>.", config field): written from the config and read back as they are
_COMMON_KEYS = (("context_length", "max_position_embeddings"), ("embedding_length", "hidden_size"),
                ("block_count", "num_hidden_layers"), ("feed_forward_length", "intermediate_size"),
                ("attention.head_count", "num_attention_heads"),
                ("attention.layer_norm_rms_epsilon", "rms_norm_eps"), ("expert_used_count", "num_experts_per_tok"))
_KEYS = {
    "qwen3_moe": _COMMON_KEYS + (("attention.head_count_kv", "num_key_value_heads"),
                                 ("attention.key_length", "head_dim"), ("attention.value_length", "head_dim"),
                                 ("expert_count", "num_experts"),
                                 ("expert_feed_forward_length", "moe_intermediate_size")),
    "mixtral": _COMMON_KEYS + (("attention.head_count_kv", "num_key_value_heads"),
                               ("expert_count", "num_local_experts")),
    "deepseek_v3": _COMMON_KEYS + (("leading_dense_block_count", "first_k_dense_replace"),
                                   ("expert_count", "n_routed_experts"),
                                   ("expert_feed_forward_length", "moe_intermediate_size"),
                                   ("expert_shared_count", "n_shared_experts"),
                                   ("expert_weights_scale", "routed_scaling_factor"),
                                   ("expert_weights_norm", "norm_topk_prob"),
                                   ("expert_group_count", "n_group"), ("expert_group_used_count", "topk_group"),
                                   ("attention.q_lora_rank", "q_lora_rank"),
                                   ("attention.kv_lora_rank", "kv_lora_rank"),
                                   ("rope.dimension_count", "qk_rope_head_dim"),
                                   ("attention.value_length_mla", "v_head_dim")),
}
_SIGMOID = 2  # llama.cpp's expert_gating_func: 1 softmax, 2 sigmoid


def _tensor_map(gguf_arch: str, blocks: int):
    import gguf

    arch = {name: a for a, name in gguf.MODEL_ARCH_NAMES.items()}[gguf_arch]
    return gguf.get_tensor_name_map(arch, blocks)


def _ggml_type(fmt: str):
    import gguf

    record = next((f for f in gguf_formats() if f["name"] == fmt), None)
    if record is None:
        raise ValueError(f"{fmt!r} is not a GGUF format; GGUF formats: {', '.join(f['name'] for f in gguf_formats())}")
    return gguf.GGMLQuantizationType(record["gguf_type"])


def _stored_bytes(fmt: str, w: torch.Tensor) -> np.ndarray:
    """A matrix [N, K] as a GGUF tensor's bytes [N, row_bytes] of format ``fmt``, from kt_kernel's
    quantizers (the gguf package has none for the K-quants; tests/test_gguf_formats.py checks them
    against gguf's dequantizer)."""
    q = _ext.quantize(fmt, w.numpy())
    a = q["blocks"] if "blocks" in q else q["values"]
    return np.ascontiguousarray(a).view(np.uint8).reshape(w.shape[0], -1)


def _gguf_name(tmap, name: str):
    """llama.cpp's name of transformers tensor ``name`` (None when the map has none); the score
    correction bias is looked up as the converter does, as the ``.bias`` of ``e_score_correction``."""
    name = name.replace("e_score_correction_bias", "e_score_correction.bias")
    return tmap.get_name(name, try_suffixes=(".weight", ".bias"))


def _rope_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's order of a q/k projection's rows: per head, the pairs (i, i + d/2) adjacent."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _rope_unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _rope_heads(model_type: str, config, name: str):
    """The heads of a projection whose rows llama.cpp permutes for its rotary order (Mixtral's q and
    k), None for any other tensor."""
    if model_type != "mixtral" or not name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
        return None
    return config.num_attention_heads if ".q_proj." in name else config.num_key_value_heads


def _to_file(model_type: str, config, name: str, w: torch.Tensor, split_kv_b: bool) -> list:
    """[(transformers-style name, tensor)] of one transformers tensor in llama.cpp's layout: the
    converter's transforms."""
    heads = _rope_heads(model_type, config, name)
    if heads is not None:
        return [(name, _rope_permute(w, heads))]
    if model_type == "deepseek_v3" and split_kv_b and name.endswith("self_attn.kv_b_proj.weight"):
        nope, v = config.qk_nope_head_dim, config.v_head_dim
        kv_b = w.reshape(config.num_attention_heads, nope + v, w.shape[-1])
        return [(name.replace("kv_b_proj", "k_b_proj"), kv_b[:, :nope].transpose(1, 2).contiguous()),
                (name.replace("kv_b_proj", "v_b_proj"), kv_b[:, nope:].contiguous())]
    return [(name, w)]


def _metadata(model_type: str, config, vocab: int) -> list:
    """[(key after "<arch>.", value)] of the model's configuration, as llama.cpp's converter writes it."""
    kv = [(key, getattr(config, field)) for key, field in _KEYS[model_type]]
    kv += [("rope.freq_base", float(config.rope_parameters["rope_theta"])), ("vocab_size", vocab)]
    if model_type == "mixtral":
        kv += [("rope.dimension_count", config.hidden_size // config.num_attention_heads),
               ("expert_feed_forward_length", config.intermediate_size)]
    if model_type == "deepseek_v3":
        rope, lora = config.qk_rope_head_dim, config.kv_lora_rank
        kv += [("attention.head_count_kv", 1), ("attention.key_length", lora + rope),
               ("attention.value_length", lora), ("attention.key_length_mla", config.qk_nope_head_dim + rope),
               ("expert_gating_func", _SIGMOID)]
    return kv


def _write_value(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        raise TypeError(f"metadata {key}: cannot write {value!r}")


def write_experts_gguf(model_path, out, *, gate_up: str = "q4_K", down: str = "q6_K", shards: int = 1) -> list:
    """:func:`write_model_gguf` of the routed experts alone (and the metadata): the file an engine
    that keeps the rest of the model in its Hugging Face folder runs the experts from."""
    return write_model_gguf(model_path, out, gate_up=gate_up, down=down, shards=shards, experts_only=True)


def write_model_gguf(model_path, out, *, gate_up: str = "q4_K", down: str = "q6_K", other: str = "f32",
                     shards: int = 1, split_kv_b: bool = True, experts_only: bool = False) -> list:
    """Writes the whole Hugging Face model in ``model_path`` to ``out`` as llama.cpp lays a model
    out (``shards`` > 1: a split set ``<stem>-0000k-of-0000N.gguf`` beside ``out``): routed experts
    gate and up in format ``gate_up``, down in ``down``; every other matrix in ``other`` (one whose
    rows are not whole blocks of it in f32), one-dimensional tensors in f32. ``split_kv_b`` False
    writes DeepSeek's kv_b_proj whole (``attn_kv_b``), as older conversions did. Returns the files
    written, first shard first."""
    import gguf
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from kt_kernel.checkpoint import open_checkpoint
    from kt_kernel.models.checkpoint import expert_parameter_names, find_experts_modules, inspect_checkpoint

    info = inspect_checkpoint(model_path)
    model_type = info.arch.model_type
    if model_type not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(f"{model_path}: model_type {model_type!r} has no GGUF writer here; whole GGUF "
                                    f"models are written for {', '.join(GGUF_ARCHITECTURES)}")
    config = info.config
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    experts = expert_parameter_names(find_experts_modules(meta))
    tmap = _tensor_map(GGUF_ARCHITECTURES[model_type], config.num_hidden_layers)
    tied = "lm_head.weight" if getattr(config, "tie_word_embeddings", False) else None
    files = {}
    tensors = []
    for name in meta.state_dict():
        if experts_only or name in experts or name == tied:
            continue
        key = info.arch.checkpoint_name(name)
        key = key if key in info.tensors else name
        file = str(Path(model_path) / info.tensors[key].file)
        w = (files.get(file) or files.setdefault(file, safe_open(file, "pt"))).get_tensor(key).float()
        for hf_name, t in _to_file(model_type, config, name, w, split_kv_b):
            gguf_name = _gguf_name(tmap, hf_name)
            if gguf_name is None:
                raise UnsupportedModelError(f"{model_path}: tensor {hf_name} has no llama.cpp name in gguf's map of "
                                            f"{GGUF_ARCHITECTURES[model_type]}")
            tensors.append((gguf_name, _file_array(t, other)))
    ckpt = open_checkpoint(model_path)
    for layer in info.moe_layers:
        for proj, name in enumerate(PROJ_TENSORS):
            fmt = down if proj == 2 else gate_up
            blocks = np.stack([_stored_bytes(fmt, ckpt.expert(layer, e, proj)) for e in range(info.num_experts)])
            tensors.append((f"blk.{layer}.{name}.weight", (blocks, _ggml_type(fmt))))

    out, arch = Path(out), GGUF_ARCHITECTURES[model_type]
    per_shard = -(-len(tensors) // shards)
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=per_shard if shards > 1 else 0)
    tiny = (Path(model_path) / TINY_MARKER).exists()
    writer.add_name(f"kt_kernel tiny {model_type}" if tiny else Path(model_path).name)
    for key, value in _metadata(model_type, config, meta.get_input_embeddings().weight.shape[0]):
        _write_value(writer, f"{arch}.{key}", value)
    if tiny:
        writer.add_string(TOKENIZER_KEY, "printable-ascii")
    for name, (array, ggml_type) in tensors:
        writer.add_tensor(name, array, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if shards == 1:
        return [out]
    return sorted(out.parent.glob(f"{out.stem}-*-of-{shards:05d}.gguf"))


def _file_array(t: torch.Tensor, fmt: str) -> tuple:
    """(bytes or f32 values, ggml type) of one tensor stored in ``fmt`` (f32 where its rows are not
    whole blocks of ``fmt``, and for one-dimensional tensors)."""
    import gguf

    ggml_type = _ggml_type(fmt)
    block = gguf.GGML_QUANT_SIZES[ggml_type][0]
    if t.dim() == 1 or fmt == "f32" or t.shape[-1] % block:
        return t.numpy().astype(np.float32), gguf.GGMLQuantizationType.F32
    rows = _stored_bytes(fmt, t.reshape(-1, t.shape[-1]).contiguous())
    return rows.reshape(*t.shape[:-1], rows.shape[-1]), ggml_type


# ---- reading --------------------------------------------------------------------------------------

def is_model_gguf(path) -> bool:
    """True when the GGUF model at ``path`` holds a whole model (its token embedding), not only experts."""
    from kt_kernel.checkpoint.gguf import open_gguf

    return "token_embd.weight" in open_gguf(path).tensors


def _model_type(ckpt) -> str:
    """The transformers model_type of a GGUF model's architecture (llama with experts: Mixtral)."""
    found = {a: t for t, a in GGUF_ARCHITECTURES.items() if t in ARCHITECTURES}.get(ckpt.arch)
    if found is None:
        raise UnsupportedModelError(f"{ckpt.path}: GGUF architecture {ckpt.arch!r} is not one kt_kernel runs as a whole "
                                    f"model; supported: {', '.join(f'{a} ({t})' for t, a in GGUF_ARCHITECTURES.items())}")
    return found


def gguf_config(path):
    """The transformers config of the whole GGUF model at ``path``, from its metadata and tensor
    shapes. Raises CheckpointError naming a missing key, UnsupportedModelError for what the
    architecture's transformers model cannot express."""
    from transformers import AutoConfig

    from kt_kernel.checkpoint.gguf import open_gguf

    ckpt = open_gguf(path)
    model_type = _model_type(ckpt)
    arch = ckpt.arch
    file = ckpt.shards[0][0]

    def meta(key, default=None):
        v = ckpt.metadata(f"{arch}.{key}")
        if v is None and default is None:
            raise CheckpointError(f"{file}: metadata {arch}.{key} is missing")
        if isinstance(v, float):  # a float32 field: its shortest decimal (1e-06, not 9.99999997e-07)
            v = float(str(np.float32(v)))
        return default if v is None else v

    if "token_embd.weight" not in ckpt.tensors:
        raise CheckpointError(f"{file} holds no token_embd.weight: a file of experts only, not a whole model")
    scaling = ckpt.metadata(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise UnsupportedModelError(f"{file}: metadata {arch}.rope.scaling.type is {scaling!r}; whole GGUF models are "
                                    "read without rope scaling")
    fields = {field: meta(key) for key, field in _KEYS[model_type] if key != "expert_weights_norm"}
    vocab = int(ckpt.tensors["token_embd.weight"][1].shape[-1])
    fields.update(vocab_size=vocab, tie_word_embeddings="output.weight" not in ckpt.tensors,
                  rope_parameters={"rope_type": "default", "rope_theta": float(meta("rope.freq_base"))},
                  bos_token_id=ckpt.metadata("tokenizer.ggml.bos_token_id"),
                  eos_token_id=ckpt.metadata("tokenizer.ggml.eos_token_id"), pad_token_id=None)
    if model_type == "qwen3_moe":  # llama.cpp renormalises qwen3moe's top-k weights
        fields.update(norm_topk_prob=bool(meta("expert_weights_norm", True)), decoder_sparse_step=1, mlp_only_layers=[])
    if model_type == "mixtral":
        head = fields["hidden_size"] // fields["num_attention_heads"]
        if meta("rope.dimension_count", head) != head:
            raise UnsupportedModelError(f"{file}: metadata {arch}.rope.dimension_count is "
                                        f"{meta('rope.dimension_count')}, the transformers model rotates whole heads "
                                        f"of {head}")
        fields["intermediate_size"] = meta("expert_feed_forward_length", fields["intermediate_size"])
    if model_type == "deepseek_v3":
        gating = meta("expert_gating_func", _SIGMOID)
        if gating != _SIGMOID:
            raise UnsupportedModelError(f"{file}: metadata {arch}.expert_gating_func is {gating}; the DeepSeek-V3 model "
                                        f"scores experts with a sigmoid ({_SIGMOID})")
        fields.update(norm_topk_prob=bool(meta("expert_weights_norm")),
                      num_key_value_heads=fields["num_attention_heads"],
                      qk_nope_head_dim=meta("attention.key_length_mla") - fields["qk_rope_head_dim"])
    return AutoConfig.for_model(model_type, **fields)


def _dequantize(ckpt, name: str) -> torch.Tensor:
    import gguf

    file, t = ckpt.tensors[name]
    try:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise UnsupportedModelError(f"{file}: tensor {name} has ggml type {t.tensor_type.name}, which gguf cannot "
                                    f"dequantize: {e}") from e
    return torch.from_numpy(np.array(values, dtype=np.float32))  # a copy: the map is read-only


def _from_file(ckpt, model_type: str, config, name: str, gguf_name: str, shape: tuple) -> torch.Tensor:
    """The transformers tensor ``name`` [shape] from the file: the converter's transforms undone."""
    file = ckpt.shards[0][0]
    if model_type == "deepseek_v3" and name.endswith("self_attn.kv_b_proj.weight"):
        if gguf_name in ckpt.tensors:  # the older files' single tensor
            return _dequantize(ckpt, gguf_name)
        k_name, v_name = gguf_name.replace("attn_kv_b", "attn_k_b"), gguf_name.replace("attn_kv_b", "attn_v_b")
        for n in (k_name, v_name):
            if n not in ckpt.tensors:
                raise CheckpointError(f"{file} has neither {gguf_name} nor {n} (with {k_name} and {v_name}, the "
                                      f"attention's kv_b_proj split per head)")
        k_b, v_b = _dequantize(ckpt, k_name), _dequantize(ckpt, v_name)
        heads = config.num_attention_heads
        want_k = (heads, config.kv_lora_rank, config.qk_nope_head_dim)
        want_v = (heads, config.v_head_dim, config.kv_lora_rank)
        for n, t, want in ((k_name, k_b, want_k), (v_name, v_b, want_v)):
            if tuple(t.shape) != want:
                raise CheckpointError(f"{ckpt.tensors[n][0]}: tensor {n} has shape {tuple(t.shape)}, but the metadata "
                                      f"makes it {want}")
        return torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(shape)
    if gguf_name not in ckpt.tensors:
        raise CheckpointError(f"{file}: tensor {gguf_name} is missing (transformers' {name})")
    w = _dequantize(ckpt, gguf_name)
    if tuple(w.shape) != tuple(shape):
        raise CheckpointError(f"{ckpt.tensors[gguf_name][0]}: tensor {gguf_name} has shape {tuple(w.shape)}, but the "
                              f"metadata makes transformers' {name} {tuple(shape)}")
    heads = _rope_heads(model_type, config, name)
    return w if heads is None else _rope_unpermute(w, heads)


def gguf_state_dict(path, model, dtype=torch.float32) -> dict:
    """transformers name -> tensor (``dtype``, CPU) of every tensor of ``model`` (built from
    :func:`gguf_config`, e.g. on the meta device) outside its routed experts and tied output,
    dequantized from the GGUF model at ``path``."""
    from kt_kernel.checkpoint.gguf import open_gguf
    from kt_kernel.models.checkpoint import expert_parameter_names, find_experts_modules

    ckpt = open_gguf(path)
    model_type = _model_type(ckpt)
    config = model.config
    experts = expert_parameter_names(find_experts_modules(model))
    tmap = _tensor_map(ckpt.arch, config.num_hidden_layers)
    tied = "lm_head.weight" if config.tie_word_embeddings else None
    out = {}
    for name, t in model.state_dict().items():
        if name in experts or name == tied:
            continue
        gguf_name = _gguf_name(tmap, name)
        if gguf_name is None:
            raise UnsupportedModelError(f"transformers' tensor {name} has no llama.cpp name in gguf's map of {ckpt.arch}")
        out[name] = _from_file(ckpt, model_type, config, name, gguf_name, tuple(t.shape)).to(dtype)
    return out


def gguf_expert_weights(path, layer: int, experts=None, dtype=torch.float32) -> tuple:
    """(gate_up [n, 2I, H], down [n, H, I]) of ``layer``'s routed experts ``experts`` (default all)
    in the GGUF model at ``path``: gguf's dequantization of their blocks, in transformers' fused layout."""
    import gguf

    from kt_kernel.checkpoint.gguf import open_gguf

    gate, up, down = open_gguf(path).projections(layer)
    ids = slice(None) if experts is None else np.asarray(experts, dtype=np.int64)

    if experts is not None and len(experts) == 0:  # gguf cannot dequantize an empty array
        I, H = gate.blocks.shape[1], down.blocks.shape[1]
        return torch.empty(0, 2 * I, H, dtype=dtype), torch.empty(0, H, I, dtype=dtype)

    def values(t):
        v = gguf.quants.dequantize(np.ascontiguousarray(t.blocks[ids]), gguf.GGMLQuantizationType[t.ggml_type])
        return torch.from_numpy(np.array(v, dtype=np.float32)).to(dtype)  # a copy: f32 comes back as the map
    return torch.cat([values(gate), values(up)], dim=1), values(down)
