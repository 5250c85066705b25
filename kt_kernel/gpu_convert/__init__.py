"""Quantizing the GPU side of a hybrid model (GPTQ W4A16 / W8A16 in compressed-tensors' format, on
the CPU): the algorithm (gptq.py), its calibration data without a network (calibration.py), the
checkpoint read one decoder layer at a time (source.py) and the converter (convert.py, cli.py;
scripts/convert_gpu_weights.py, kt-convert-gpu-weights)."""
from kt_kernel.gpu_convert.convert import GpuQuantSettings, convert_gpu_weights
from kt_kernel.gpu_convert.gptq import QuantizedLinear, gptq_quantize, hessian, layer_error, rtn_quantize

__all__ = ["GpuQuantSettings", "QuantizedLinear", "convert_gpu_weights", "gptq_quantize", "hessian", "layer_error",
           "rtn_quantize"]
