"""The error every checkpoint reader, the converter and the loader raise."""
from __future__ import annotations

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A checkpoint, converted folder or option that cannot be used; the message says why."""
