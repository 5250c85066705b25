"""Converting Hugging Face MoE checkpoints into kt_kernel's quantized expert files, and loading them.

    from kt_kernel.convert import convert_checkpoint
    convert_checkpoint("DeepSeek-V3-bf16/", "DeepSeek-V3-kt-int4/", "int4", threads=32)
    w = KTMoEWrapper(..., weight_path="DeepSeek-V3-kt-int4/", method="AMXINT4")
    w.load_weights(physical_to_logical_map)

The format is described in kt_kernel.convert.layout and docs/design.md.
"""
from kt_kernel.convert.convert import QUANT_METHODS, convert_checkpoint, read_meta, verify_layer_file
from kt_kernel.convert.layout import FORMAT_VERSION, META_FILE
from kt_kernel.convert.load import is_converted, load_converted_layer, load_hf_layer, verify_folder
from kt_kernel.convert.source import ConversionError, dequantize_fp8, open_source, quantize_fp8

__all__ = ["convert_checkpoint", "verify_layer_file", "QUANT_METHODS", "FORMAT_VERSION", "META_FILE",
           "load_converted_layer", "load_hf_layer", "verify_folder", "read_meta", "is_converted", "ConversionError",
           "dequantize_fp8", "quantize_fp8", "open_source"]
