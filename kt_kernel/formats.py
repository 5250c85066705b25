"""Weight formats, as described by the native format records (cpp/src/formats/format_registry.cpp).

Two families share the records: the formats a method names (``BF16``, ``AMXINT8``, ``AMXINT4``:
one format for the whole layer, quantized by us or stored by the converter), and the GGUF types,
whose method is ``LLAMAFILE``: a GGUF file's tensors keep their own type, projection by projection
(``gguf_type`` is the ggml type id; bf16 is in both families). int4_g32_zp belongs to neither: the
int4 release methods (RAWINT4, GPTQ_INT4) load asymmetric releases into it."""
from __future__ import annotations

from kt_kernel import _ext

GGUF_METHOD = "LLAMAFILE"

_RECORDS = _ext.formats()


def all_formats() -> list[dict]:
    """Every format record: name, method, quant_method, group, k_align, block_bytes,
    panel_tail_bytes, bits_per_weight, gguf_type, arrays, acts, int_dot, weight_rel_err,
    layer_rel_err, agreement and kernels (see ``kt_kernel._ext.formats``)."""
    return list(_RECORDS)


def formats() -> list[dict]:
    """The records of the formats a method names (one per method, in record order); not
    int4_g32_zp, which no method names (the int4 release readers choose it)."""
    return [f for f in _RECORDS if f["method"] not in (GGUF_METHOD, "")]


def gguf_formats() -> list[dict]:
    """The records of the formats a GGUF tensor may hold as it is (ggml type id ``gguf_type``)."""
    return [f for f in _RECORDS if f["gguf_type"] >= 0]


# method name accepted by KTMoEWrapper -> weight format id (LLAMAFILE takes its formats from the file)
METHODS = {f["method"]: f["name"] for f in formats()}
