"""The errors a checkpoint or a model can raise before kt_kernel runs it."""
from __future__ import annotations

__all__ = ["CheckpointError", "UnsupportedModelError"]


class CheckpointError(ValueError):
    """The checkpoint's files disagree with its config.json or with themselves: a tensor is
    missing, has the wrong shape or dtype, or config.json cannot be read. The message names the
    tensor key and the config field."""


class UnsupportedModelError(ValueError):
    """The model is well-formed but kt_kernel cannot run it: not a Mixture-of-Experts model, an
    MoE architecture without a row in kt_kernel.models.ARCHITECTURES, or a feature (quantized
    checkpoint, activation other than SiLU) the kernels lack."""
