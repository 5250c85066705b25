"""Quantizing the GPU side of a hybrid model (GPTQ W4A16 / W8A16 in compressed-tensors' format, on
the CPU): the algorithm (gptq.py) and its calibration data without a network (calibration.py); the
converter around them is to come (issue 23)."""
from kt_kernel.gpu_convert.gptq import QuantizedLinear, gptq_quantize, hessian, layer_error, rtn_quantize

__all__ = ["QuantizedLinear", "gptq_quantize", "hessian", "layer_error", "rtn_quantize"]
