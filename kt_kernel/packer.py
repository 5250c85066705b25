"""The packer: one MoE layer's weights into the engine's layout, the step between a checkpoint
reader and the engine.

It takes the weights in one of two forms, and the native layer does the work (C++ MoeLayer:
split of the experts across the sub-pools, packing for the layer's kernels):
  float weights       gate/up [E, I, H], down [E, H, I] (fp32, bf16 or fp16): quantized to the
                      layer's format by the reference quantizer, then packed (an HF checkpoint,
                      tensors from an engine)
  logical arrays      the layer's format as kt_kernel.checkpoint.layout stores it (one array per
                      entry of the format record's arrays): packed as they are (a converted folder,
                      a GGUF file's blocks)
Slot p of the layer takes expert pmap[p] of the E given; slots the layer keeps on the GPU are skipped.
"""
from __future__ import annotations

import numpy as np
import torch

from kt_kernel.checkpoint.layout import PROJ, format_record

__all__ = ["pack_float", "pack_quantized"]


def _bias_addresses(biases) -> dict:
    """load_from_tensors' / load_quantized's bias keywords: ``biases`` is None or (gate, up, down),
    each None or a contiguous fp32 array over the logical experts ([E, I], [E, I], [E, H])."""
    if biases is None:
        return {}
    return {f"{p}_bias": 0 if b is None else (b.data_ptr() if isinstance(b, torch.Tensor) else b.ctypes.data)
            for p, b in zip(PROJ, biases)}


def pack_float(native, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, pmap: torch.Tensor,
               num_experts: int, biases=None) -> None:
    """Quantizes and packs float weights: contiguous CPU tensors of one dtype, pmap int64."""
    dtype = str(gate.dtype).replace("torch.", "")
    native.load_from_tensors(gate.data_ptr(), up.data_ptr(), down.data_ptr(), dtype, pmap.data_ptr(), num_experts,
                             **_bias_addresses(biases))


def pack_quantized(native, arrays: dict, pmap: torch.Tensor, num_experts: int, private_parts=(),
                   biases=None) -> None:
    """Packs a layer's logical arrays as they are: ``(proj, part) ->`` an np.ndarray [E, ...] of all
    experts stacked, or a list of E arrays (None for an expert no CPU slot takes). The pages of
    mapped arrays are dropped once packed (their bytes are then in the packed copy); the parts in
    ``private_parts`` are in private memory and keep theirs."""
    # a GGUF layer may store down in another format than gate and up
    formats = (native.format, native.format, native.down_format)

    def address(a):
        if isinstance(a, list):
            return [0 if x is None else x.ctypes.data for x in a]
        return a.ctypes.data

    native.load_quantized([[address(arrays[(p, a["part"])]) for a in format_record(f)["arrays"]]
                           for p, f in zip(PROJ, formats)], pmap.data_ptr(), num_experts,
                          drop_pages=[[a["part"] not in private_parts for a in format_record(f)["arrays"]]
                                      for f in formats], **_bias_addresses(biases))
