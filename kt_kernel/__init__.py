"""kt_kernel: CPU Mixture-of-Experts kernels for hybrid CPU/GPU inference.

The public API is :class:`KTMoEWrapper` plus a few functions about the CPU and the formats.
"""
from kt_kernel.cpu import cpu_info, set_isa
from kt_kernel.formats import METHODS, formats
from kt_kernel.integrations.sglang import generate_gpu_experts_masks
from kt_kernel.wrapper import KTMoEWrapper

__all__ = ["KTMoEWrapper", "generate_gpu_experts_masks", "cpu_info", "set_isa", "formats", "METHODS"]
__version__ = "0.1.0"
