"""How far a layer's output may be from the fp32 reference: the error measure and its bound per method."""
from __future__ import annotations

import torch

from kt_kernel.torch_moe import TORCH_PEER
from kt_kernel.formats import formats as method_formats

__all__ = ["relative_error", "REL_ERR_BOUNDS"]

# Bound on relative_error(out, fp32 reference) per method, for the random layers of kt_kernel.random_moe
# (normal(0, 1/fan_in) weights, normal(0, 1) activations): each format's layer_rel_err (its record,
# where the figures behind it are given); the torch bf16 peer measures ~0.004 on shapes A and S.
# A method that drifts past its bound has lost accuracy, whatever its speed.
REL_ERR_BOUNDS = {TORCH_PEER: 0.01, **{f["method"]: f["layer_rel_err"] for f in method_formats()}}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_2 / ||ref||_2, computed in fp64."""
    ref = ref.to(torch.float64)
    return float(torch.linalg.vector_norm(out.to(torch.float64) - ref) / torch.linalg.vector_norm(ref))
