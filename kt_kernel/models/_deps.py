"""The optional dependency of kt_kernel.models and kt_kernel.integrations: transformers."""
from __future__ import annotations

MIN_TRANSFORMERS = (5, 7)  # the first release whose from_pretrained accepts registered experts implementations


def require_transformers():
    """Imports and returns transformers, or raises ImportError saying how to install a version
    that has the APIs used here."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError("kt_kernel.models needs transformers: pip install 'kt_kernel[models]'") from e
    version = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_TRANSFORMERS or version[0] > 5:
        raise ImportError(f"kt_kernel.models needs transformers >= {'.'.join(map(str, MIN_TRANSFORMERS))}, < 6; "
                          f"found {transformers.__version__}: pip install 'kt_kernel[models]'")
    return transformers
