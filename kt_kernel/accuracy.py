"""How far a layer's output may be from the fp32 reference: the error measure and its bound per method."""
from __future__ import annotations

import torch

from kt_kernel.torch_moe import TORCH_PEER

__all__ = ["relative_error", "REL_ERR_BOUNDS"]

# Bound on relative_error(out, fp32 reference) per method, for the random layers of kt_kernel.random_moe
# (normal(0, 1/fan_in) weights, normal(0, 1) activations). Measured on shapes A and S:
# torch bf16 ~0.004, BF16 ~0.002 (bf16 activations), AMXINT8 ~0.027 (int8 per channel, int8
# activations), AMXINT4 ~0.13 (int4 groups of 32 through three projections). The bounds leave
# 1.4-2x margin and equal the fp32_rel bounds of tests/conftest.py; a method that drifts past one
# has lost accuracy, whatever its speed.
REL_ERR_BOUNDS = {TORCH_PEER: 0.01, "BF16": 0.01, "AMXINT8": 0.04, "AMXINT4": 0.2}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_2 / ||ref||_2, computed in fp64."""
    ref = ref.to(torch.float64)
    return float(torch.linalg.vector_norm(out.to(torch.float64) - ref) / torch.linalg.vector_norm(ref))
