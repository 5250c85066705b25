"""Released checkpoints seen as float weights, for the converter: a compressed-tensors or AutoGPTQ
int4 release's experts decoded (scale * (q - zero point)) and a gpt-oss MXFP4 release's (e2m1 times
2^(s - 127), gate and up from the interleaved rows), both exact in fp32, so that
``convert_cpu_weights.py --input-type rawint4|mxfp4`` turns a release into kt_kernel's INT8 or
INT4 folders, as a bf16 or fp8 checkpoint. The experts are decoded one projection at a time (never
the layer whole; the converter's threads call at once), the other tensors are copied as stored,
and gpt-oss's expert biases go into the layer files beside the weights (``layer_biases``).
"""
from __future__ import annotations

from typing import Optional

import torch

from kt_kernel.checkpoint.autogptq import AutoGptqCheckpoint, is_autogptq_int4
from kt_kernel.checkpoint.ct_int4 import CompressedInt4Checkpoint, is_compressed_int4
from kt_kernel.checkpoint.int4_release import Int4Release
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import HFCheckpoint, open_hf_checkpoint
from kt_kernel.checkpoint.mxfp4 import MXFP4Checkpoint, dequantize_gpt_oss, is_mxfp4
from kt_kernel.checkpoint.safetensors_io import MappedFolder

__all__ = ["DecodedInt4Checkpoint", "DecodedMxfp4Checkpoint", "open_convert_source"]


class DecodedInt4Checkpoint(HFCheckpoint):
    """An int4 release's routed experts as fp32 weights (HFCheckpoint's interface: ``expert``,
    ``read`` of the other tensors, ``non_expert_keys``, ``layer_bytes``)."""
    kind = "hf-int4-decoded"
    release: Int4Release = None

    def expert(self, layer: int, e: int, proj: int) -> torch.Tensor:  # the converter's threads call it at once
        return torch.from_numpy(self.release.decode(layer, e, proj))

    def bytes_per_weight(self) -> float:
        return 0.5

    def record(self) -> dict:
        return {"path": str(self.path.resolve()), "fingerprint": self.fingerprint, "layout": self.release.layout_name,
                "dtype": self.release.stored_dtype}


class DecodedMxfp4Checkpoint(HFCheckpoint):
    """A gpt-oss MXFP4 release's routed experts as fp32 weights, with their biases (HFCheckpoint's
    interface, as DecodedInt4Checkpoint)."""
    kind = "mxfp4-decoded"
    release: MXFP4Checkpoint = None

    def expert(self, layer: int, e: int, proj: int) -> torch.Tensor:
        keys = self.release.keys[layer]
        name, rows = ("down_proj", slice(None)) if proj == 2 else ("gate_up_proj", slice(proj, None, 2))
        maps = MappedFolder(self.path, self.release.tensors)
        try:
            b, s = maps.array(keys[(name, "blocks")])[e, rows], maps.array(keys[(name, "scales")])[e, rows]
            return torch.from_numpy(dequantize_gpt_oss(b, s))
        finally:
            maps.close()

    def layer_biases(self, layer: int):
        return self.release.layer_biases(layer)

    def bytes_per_weight(self) -> float:
        return 17 / 32

    def record(self) -> dict:
        return {"path": str(self.path.resolve()), "fingerprint": self.fingerprint, "layout": "gpt-oss fused",
                "dtype": "mxfp4"}


def _decoded(cls, release, **layout) -> HFCheckpoint:
    """``cls`` (a float view) over ``release``, whose every MoE layer is checked first; ``layout``:
    the HFCheckpoint fields that differ between releases."""
    index = release.index
    src = cls(path=release.path, config=release.config, num_layers=release.num_layers,
              num_experts=release.num_experts, hidden_size=release.hidden_size,
              intermediate_size=release.intermediate_size, moe_layers=release.moe_layers, fp8_block=None,
              tensors=index.tensors, expert_keys=release.keys, scale_keys={}, fingerprint=index.fingerprint,
              data_start=index.data_start, **layout)
    src.release = release
    for layer in src.moe_layers:
        release.check_layer(layer, release.stored_method, src.hidden_size, src.intermediate_size, src.num_experts)
    return src


def _decoded_mxfp4(path) -> DecodedMxfp4Checkpoint:
    release = MXFP4Checkpoint(path, "MXFP4")
    return _decoded(DecodedMxfp4Checkpoint, release, layout="fused", dtype="MXFP4", interleaved=True,
                    activation=release.activation)


def _decoded_int4(path) -> DecodedInt4Checkpoint:
    release = (AutoGptqCheckpoint if is_autogptq_int4(path) else CompressedInt4Checkpoint)(path, "RAWINT4")
    return _decoded(DecodedInt4Checkpoint, release, layout="per-expert", dtype="I4")


def open_convert_source(path, input_type: Optional[str] = None) -> HFCheckpoint:
    """The converter's reader of ``path``: an HF checkpoint of float or fp8 experts, or with
    ``input_type`` rawint4 / mxfp4 (or such a release found when it is None) the release decoded.
    ``input_type`` names what the folder must hold."""
    kinds = {"rawint4": (is_compressed_int4(path) or is_autogptq_int4(path), _decoded_int4,
                         "a compressed-tensors pack-quantized or AutoGPTQ int4 release"),
             "mxfp4": (is_mxfp4(path), _decoded_mxfp4, "a gpt-oss MXFP4 release (quantization_config mxfp4)")}
    for name, (found, open_it, what) in kinds.items():
        if input_type == name and not found:
            raise ConversionError(f"--input-type {name} but {path} is not {what}")
        if found:
            if input_type not in (None, name):
                raise ConversionError(f"--input-type {input_type} but {path} is {what}: use --input-type {name} "
                                      "(or none)")
            return open_it(path)
    return open_hf_checkpoint(path, input_type)
