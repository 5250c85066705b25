"""Weight formats, as described by the native format records (cpp/src/formats/format_registry.cpp)."""
from __future__ import annotations

from kt_kernel import _ext

# method name accepted by KTMoEWrapper -> weight format id
METHODS = {f["method"]: f["name"] for f in _ext.formats()}


def formats() -> list[dict]:
    """One dict per weight format: name, method, quant_method, group, k_align, block_bytes,
    panel_tail_bytes, bits_per_weight, arrays, acts, int_dot, weight_rel_err, layer_rel_err,
    agreement and kernels (see ``kt_kernel._ext.formats``)."""
    return _ext.formats()
