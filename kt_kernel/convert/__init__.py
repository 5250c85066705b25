"""Converting Hugging Face MoE checkpoints into kt_kernel's quantized expert files.

    from kt_kernel.convert import convert_checkpoint
    convert_checkpoint("DeepSeek-V3-bf16/", "DeepSeek-V3-kt-int4/", "int4", threads=32)
    w = KTMoEWrapper(..., weight_path="DeepSeek-V3-kt-int4/", method="AMXINT4")
    w.load_weights(physical_to_logical_map)

The converter reads through kt_kernel.checkpoint (the format is described in
kt_kernel.checkpoint.layout and docs/design.md); the wrapper loads what it writes.
"""
from kt_kernel.checkpoint.converted import is_converted, read_meta, verify_folder
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import dequantize_fp8, open_hf_checkpoint, quantize_fp8
from kt_kernel.checkpoint.layout import FORMAT_VERSION, META_FILE
from kt_kernel.convert.convert import QUANT_METHODS, convert_checkpoint, verify_layer_file

__all__ = ["convert_checkpoint", "verify_layer_file", "QUANT_METHODS", "FORMAT_VERSION", "META_FILE",
           "verify_folder", "read_meta", "is_converted", "ConversionError", "dequantize_fp8", "quantize_fp8",
           "open_hf_checkpoint"]
