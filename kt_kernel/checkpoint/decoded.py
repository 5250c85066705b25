"""Released checkpoints seen as float weights, for the converter: a compressed-tensors int4
release's experts decoded (scale * (q - zero point), exact in fp32), so that
``convert_cpu_weights.py --input-type rawint4`` turns a release into kt_kernel's INT8 or INT4
folders, as a bf16 or fp8 checkpoint. The experts are decoded one at a time (never the layer
whole), the other tensors are copied as stored.

gpt-oss checkpoints (MXFP4 releases, bf16 ones) are refused: their experts' biases and clamped
SwiGLU have no place in a converted folder; method MXFP4 runs a release as stored, and a bf16 one
is quantized at load with its biases.
"""
from __future__ import annotations

from typing import Optional

import torch

from kt_kernel.checkpoint.ct_int4 import CompressedInt4Checkpoint, is_compressed_int4
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import HFCheckpoint, index_tensors, open_hf_checkpoint
from kt_kernel.checkpoint.mxfp4 import is_mxfp4

__all__ = ["DecodedInt4Checkpoint", "open_convert_source", "RELEASE_INPUT_TYPES"]

# --input-type names of the releases the converter decodes (beside hf.INPUT_TYPES' dtypes)
RELEASE_INPUT_TYPES = ("rawint4", "mxfp4")


class DecodedInt4Checkpoint(HFCheckpoint):
    """A compressed-tensors int4 release's routed experts as fp32 weights (HFCheckpoint's interface:
    ``expert``, ``read`` of the other tensors, ``non_expert_keys``, ``layer_bytes``)."""
    kind = "hf-int4-decoded"
    release: CompressedInt4Checkpoint = None

    def expert(self, layer: int, e: int, proj: int) -> torch.Tensor:  # the converter's threads call it at once
        return torch.from_numpy(self.release.decode(layer, e, proj))

    def bytes_per_weight(self) -> float:
        return 0.5

    def record(self) -> dict:
        return {"path": str(self.path.resolve()), "fingerprint": self.fingerprint, "layout": "compressed-tensors",
                "dtype": "int4 pack-quantized"}


def _decoded_int4(path) -> DecodedInt4Checkpoint:
    release = CompressedInt4Checkpoint(path, "RAWINT4")
    index = index_tensors(path)
    src = DecodedInt4Checkpoint(path=release.path, config=release.config, num_layers=release.num_layers,
                                num_experts=release.num_experts, hidden_size=release.hidden_size,
                                intermediate_size=release.intermediate_size, moe_layers=release.moe_layers,
                                layout="per-expert", dtype="I4", fp8_block=None, tensors=index.tensors,
                                expert_keys=release.keys, scale_keys={}, fingerprint=index.fingerprint,
                                data_start=index.data_start)
    src.release = release
    for layer in src.moe_layers:
        release.check_layer(layer, "RAWINT4", src.hidden_size, src.intermediate_size, src.num_experts)
    return src


def open_convert_source(path, input_type: Optional[str] = None) -> HFCheckpoint:
    """The converter's reader of ``path``: an HF checkpoint of float or fp8 experts, or with
    ``input_type`` rawint4 (or a compressed-tensors int4 release found when it is None) the release
    decoded. ``input_type`` names what the folder must hold."""
    int4 = is_compressed_int4(path)
    if input_type == "mxfp4" or (input_type is None and is_mxfp4(path)):
        raise ConversionError(f"{path}: a gpt-oss MXFP4 release's experts have biases and a clamped SwiGLU, which a "
                              "converted folder does not hold; run it as stored with method MXFP4")
    if input_type == "rawint4" and not int4:
        raise ConversionError(f"--input-type rawint4 but {path} is not a compressed-tensors pack-quantized release "
                              "(config.json quantization_config)")
    if int4:
        if input_type not in (None, "rawint4"):
            raise ConversionError(f"--input-type {input_type} but {path} is a compressed-tensors int4 release: use "
                                  "--input-type rawint4 (or none)")
        return _decoded_int4(path)
    src = open_hf_checkpoint(path, input_type)
    if src.bias_keys:
        raise ConversionError(f"{path}: its experts have biases (gpt-oss) and a clamped SwiGLU, which a converted "
                              "folder does not hold; KTMoEWrapper(weight_path=...) quantizes this checkpoint at load "
                              "with its biases (cpu_save does not apply either)")
    return src
