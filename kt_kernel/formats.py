"""Weight formats, as described by the native traits table."""
from __future__ import annotations

from kt_kernel import _ext

# method name accepted by KTMoEWrapper -> weight format id
METHODS = {f["method"]: f["name"] for f in _ext.formats()}


def formats() -> list[dict]:
    """One dict per weight format: name, method, group, k_align, bits_per_weight."""
    return _ext.formats()
