"""Checkpoint readers: what a folder of weights holds for each MoE layer, and its bytes.

    reader = open_checkpoint(path, method)  # kind "converted", "gguf" or "hf"; with method FP8 on an
                                            # fp8 release "hf-fp8", with RAWINT4 / GPTQ_INT4 "compressed-int4"
                                            # or "autogptq-int4",
                                            # with MXFP4 on a gpt-oss release "mxfp4"
    reader.check_layer(layer, method, H, I)
    reader.stored_method                    # None: float weights, quantized by the packer
    reader.expert(layer, e, proj)           # float readers: fp32 [N, K]
    reader.layer_arrays(layer, experts)     # stored readers: the format's logical arrays (a context)
    reader.layer_biases(layer)              # readers of experts with biases (mxfp4): fp32 gate, up, down

Every reader has ``kind``, ``path``, ``num_experts``, ``hidden_size``, ``intermediate_size``,
``moe_layers`` and ``fingerprint``. The loader (kt_kernel.loading), the converter
(kt_kernel.convert) and the model checks (kt_kernel.models) read through this package, which
imports none of them; docs/loading.md has the flow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from kt_kernel.checkpoint.autogptq import AutoGptqCheckpoint, is_autogptq_int4
from kt_kernel.checkpoint.converted import ConvertedCheckpoint, is_converted
from kt_kernel.checkpoint.ct_int4 import INT4_RELEASE_METHODS, CompressedInt4Checkpoint, is_compressed_int4
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.fp8 import FP8_METHOD, FP8Checkpoint
from kt_kernel.checkpoint.gguf import GGUFCheckpoint, is_gguf, open_gguf
from kt_kernel.checkpoint.hf import HFCheckpoint, open_hf_checkpoint
from kt_kernel.checkpoint.mxfp4 import MXFP4_METHOD, MXFP4Checkpoint, is_mxfp4

__all__ = ["open_checkpoint", "Checkpoint", "AutoGptqCheckpoint", "CompressedInt4Checkpoint", "ConvertedCheckpoint", "FP8Checkpoint", "GGUFCheckpoint", "HFCheckpoint",
           "MXFP4Checkpoint", "ConversionError", "is_converted"]

Checkpoint = Union[AutoGptqCheckpoint, ConvertedCheckpoint, CompressedInt4Checkpoint, FP8Checkpoint, GGUFCheckpoint, HFCheckpoint,
                   MXFP4Checkpoint]


def open_checkpoint(path, method: Optional[str] = None) -> Checkpoint:
    """The reader of ``path``: a converted folder (kt_kernel_meta.json or layer files there), a
    GGUF model (a .gguf file, a shard of a split set, or a folder of .gguf files and no
    safetensors) or a Hugging Face checkpoint; with ``method`` FP8, an fp8 checkpoint's experts
    as they are stored (FP8Checkpoint); with ``method`` RAWINT4 or GPTQ_INT4, a compressed-tensors
    int4 checkpoint's (CompressedInt4Checkpoint) or an AutoGPTQ one's (AutoGptqCheckpoint); with ``method`` MXFP4, a gpt-oss MXFP4
    checkpoint's (MXFP4Checkpoint). Reads metadata and headers only."""
    path = Path(path)
    if is_converted(path):
        return ConvertedCheckpoint(path)
    if is_gguf(path) and not (path.is_dir() and any(path.glob("*.safetensors"))):
        return open_gguf(path)
    if method in INT4_RELEASE_METHODS:
        return AutoGptqCheckpoint(path, method) if is_autogptq_int4(path) else CompressedInt4Checkpoint(path, method)
    if is_compressed_int4(path) or is_autogptq_int4(path):
        kind = "compressed-tensors" if is_compressed_int4(path) else "AutoGPTQ"
        raise ConversionError(f"{path} holds {kind} int4 experts: load it with method "
                              f"{' or '.join(INT4_RELEASE_METHODS)} (as stored), not {method!r}")
    if method == MXFP4_METHOD and is_mxfp4(path):
        return MXFP4Checkpoint(path, method)
    if is_mxfp4(path):
        raise ConversionError(f"{path} holds MXFP4 experts (gpt-oss): load it with method {MXFP4_METHOD} (as stored), "
                              f"not {method!r}")
    hf = open_hf_checkpoint(path)
    return FP8Checkpoint(hf) if method == FP8_METHOD and hf.dtype == "F8_E4M3" else hf
