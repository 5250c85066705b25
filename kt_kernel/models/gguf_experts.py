"""GGUF files of a model's routed experts, and gguf's dequantization of them: the end-to-end runs
of the LLAMAFILE method (tests, the demo's --gguf). The experts are stored as llama.cpp names and
stores them; the rest of the model stays in its Hugging Face folder (as an engine that runs a
GGUF's experts on the CPU beside the original model's GPU weights uses them).

    path = build_tiny_model("qwen3_moe", moe_intermediate_size=256)
    files = write_experts_gguf(path, tmp / "experts.gguf", gate_up="q4_K", down="q6_K", shards=2)
    model = load_model(path, "LLAMAFILE", weight_path=files[0])
    ref = load_reference(path, gguf_experts=files[0])     # the same blocks, dequantized, in fp32

Blocks come from kt_kernel's quantizers (``kt_kernel._ext.quantize``; the gguf package has none
for the K-quants), checked against gguf's dequantizer by tests/test_gguf_formats.py. The
reference for such a model is the same model with each expert replaced by gguf's dequantization
of its blocks (:func:`dequantized_experts`; ``load_reference(..., gguf_experts=...)``), so a
comparison measures the kernels, not the quantizer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kt_kernel import _ext
from kt_kernel.checkpoint import open_checkpoint
from kt_kernel.formats import gguf_formats

__all__ = ["GGUF_ARCHITECTURES", "write_experts_gguf", "dequantized_experts"]

# model_type -> llama.cpp's architecture name (the prefix of its metadata keys)
GGUF_ARCHITECTURES = {"qwen3_moe": "qwen3moe", "deepseek_v3": "deepseek2", "mixtral": "llama"}
PROJECTIONS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def _ggml_type(fmt: str):
    import gguf

    record = next((f for f in gguf_formats() if f["name"] == fmt), None)
    if record is None:
        raise ValueError(f"{fmt!r} is not a GGUF format; GGUF formats: {', '.join(f['name'] for f in gguf_formats())}")
    return gguf.GGMLQuantizationType(record["gguf_type"])


def _stored_bytes(fmt: str, w: torch.Tensor) -> np.ndarray:
    """One expert's projection [N, K] as the GGUF tensor's bytes [N, row_bytes]."""
    q = _ext.quantize(fmt, w.numpy())
    a = q["blocks"] if "blocks" in q else q["values"]
    return np.ascontiguousarray(a).view(np.uint8).reshape(w.shape[0], -1)


def write_experts_gguf(model_path, out, *, gate_up: str = "q4_K", down: str = "q6_K", shards: int = 1) -> list:
    """Writes the routed experts of every MoE layer of the Hugging Face model in ``model_path`` to
    ``out`` (``shards`` > 1: a split set ``<stem>-0000k-of-0000N.gguf`` beside ``out``), gate and
    up in format ``gate_up``, down in ``down``. Returns the files written, first shard first."""
    import gguf

    ckpt = open_checkpoint(model_path)
    arch = GGUF_ARCHITECTURES.get(ckpt.config.get("model_type"))
    if arch is None:
        raise ValueError(f"{model_path}: model_type {ckpt.config.get('model_type')!r} has no GGUF architecture here "
                         f"(known: {', '.join(GGUF_ARCHITECTURES)})")
    out = Path(out)
    topk = ckpt.config["num_experts_per_tok"]
    tensors = []
    for layer in ckpt.moe_layers:
        for proj, name in enumerate(PROJECTIONS):
            fmt = down if proj == 2 else gate_up
            blocks = np.stack([_stored_bytes(fmt, ckpt.expert(layer, e, proj)) for e in range(ckpt.num_experts)])
            tensors.append((f"blk.{layer}.{name}.weight", blocks, _ggml_type(fmt)))
    per_shard = -(-len(tensors) // shards)
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=per_shard if shards > 1 else 0)
    writer.add_block_count(ckpt.num_layers)
    writer.add_embedding_length(ckpt.hidden_size)
    writer.add_expert_count(ckpt.num_experts)
    writer.add_expert_used_count(topk)
    writer.add_expert_feed_forward_length(ckpt.intermediate_size)
    for name, blocks, ggml_type in tensors:
        writer.add_tensor(name, blocks, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if shards == 1:
        return [out]
    return sorted(out.parent.glob(f"{out.stem}-*-of-{shards:05d}.gguf"))


def dequantized_experts(gguf_path, layer: int) -> tuple:
    """gguf's dequantization of layer ``layer``'s experts in the GGUF set of ``gguf_path`` (any
    shard): (gate [E, I, H], up [E, I, H], down [E, H, I]) fp32."""
    import gguf

    path = Path(gguf_path)
    shards = [path]
    if "-of-" in path.stem:
        shards = sorted(path.parent.glob(path.stem.rsplit("-", 3)[0] + "-*-of-*.gguf"))
    found = {}
    for shard in shards:
        for t in gguf.GGUFReader(shard).tensors:
            found[t.name] = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32))
    return tuple(found[f"blk.{layer}.{name}.weight"] for name in PROJECTIONS)
