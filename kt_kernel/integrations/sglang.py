"""What the KT fork of SGLang (sglang-kt 0.7.2) imports from kt_kernel besides KTMoEWrapper.

sglang-kt imports ``KTMoEWrapper`` and ``generate_gpu_experts_masks`` together and turns KT off
silently when either is missing; ``kt_kernel`` re-exports this module's function for it.
"""
from __future__ import annotations

import torch


def generate_gpu_experts_masks(activation_freq: torch.Tensor, num_gpu_experts_total: int) -> torch.Tensor:
    """The ``num_gpu_experts_total`` most active experts of the whole model, as a writable bool CPU
    tensor of ``activation_freq``'s shape [num_layers, num_experts] (True: on the GPU).

    ``activation_freq``: how often each (layer, expert) was routed to, any float or integer
    dtype. The count is global, not per layer: a layer whose experts are hot gets more GPU slots.
    Equal frequencies go to the lower (layer, expert) first, so the choice is deterministic."""
    if not isinstance(activation_freq, torch.Tensor):
        raise TypeError(f"activation_freq must be a torch.Tensor [num_layers, num_experts], got "
                        f"{type(activation_freq).__name__}")
    if activation_freq.dim() != 2:
        raise ValueError(f"activation_freq has shape {tuple(activation_freq.shape)}, expected [num_layers, num_experts]")
    if activation_freq.dtype == torch.bool or activation_freq.is_complex():
        raise TypeError(f"activation_freq has dtype {activation_freq.dtype}, expected a real number dtype")
    total = activation_freq.numel()
    if not isinstance(num_gpu_experts_total, int) or isinstance(num_gpu_experts_total, bool) \
            or not 0 <= num_gpu_experts_total <= total:
        raise ValueError(f"num_gpu_experts_total={num_gpu_experts_total!r} must be an integer in 0..{total} "
                         f"(num_layers * num_experts)")
    freq = activation_freq.detach().to("cpu", torch.float64).flatten()
    if torch.isnan(freq).any():
        raise ValueError("activation_freq holds NaN")
    order = torch.sort(freq, descending=True, stable=True).indices
    mask = torch.zeros(total, dtype=torch.bool)
    mask[order[:num_gpu_experts_total]] = True
    return mask.view(activation_freq.shape)


# sglang-kt's --kt-method names that are other names of ours, and those of formats we lack
_METHOD_ALIASES = {"AMXBF16": "BF16"}
_METHODS_WITHOUT_A_FORMAT = {"AMXFP8": "fp8 block-quantized experts", "MXFP8": "mxfp8 experts"}


def resolve_method(method):
    """``method`` as KTMoEWrapper's own name; sglang-kt's fp8 names raise, naming what works."""
    if method in _METHODS_WITHOUT_A_FORMAT:
        raise NotImplementedError(
            f"method {method!r} ({_METHODS_WITHOUT_A_FORMAT[method]}) is not implemented; methods: BF16 (also "
            "AMXBF16), AMXINT8, AMXINT4, FP8 (e4m3 block-scaled releases), RAWINT4 and GPTQ_INT4 (compressed-tensors "
            "int4 releases), MXFP4 (gpt-oss releases), LLAMAFILE (the experts of a GGUF file)")
    return _METHOD_ALIASES.get(method, method)
