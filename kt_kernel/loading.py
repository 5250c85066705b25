"""Loading one MoE layer: wrapper -> checkpoint reader -> packer -> engine (docs/loading.md).

The wrapper says what it wants (a ``LayerTarget``) and hands over a reader or tensors; this module
checks the reader against the target, picks the experts that CPU slots use, and hands the
weights to the packer in the form the reader stores them. With a save folder (cpu_save), float
weights are first quantized into it by the converter's writer and then loaded from it like any
converted folder, so that a later start reads them from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from kt_kernel.checkpoint import Checkpoint, ConvertedCheckpoint
from kt_kernel.convert.save import TENSORS_SOURCE, save_layer, saved_layer_ready
from kt_kernel.packer import pack_float, pack_quantized

__all__ = ["LayerTarget", "load_layer", "load_tensors"]


@dataclass(frozen=True)
class LayerTarget:
    """The layer a wrapper loads: its index, method and geometry, which of its physical slots the
    CPU keeps, and the threads that quantize for cpu_save."""
    layer: int
    method: str
    num_experts: int          # physical slots
    hidden_size: int
    intermediate_size: int
    cpu_slots: torch.Tensor   # bool [num_experts]
    threads: int

    def experts_read(self, pmap: torch.Tensor, num_experts: int) -> set:
        """The logical experts (of ``num_experts``) that CPU slots take."""
        return {int(pmap[p]) for p in range(len(pmap)) if self.cpu_slots[p] and 0 <= int(pmap[p]) < num_experts}


def load_layer(native, target: LayerTarget, reader: Checkpoint, pmap: Optional[torch.Tensor],
               save: Optional[str] = None, biases=None) -> None:
    """Loads layer ``target.layer`` of ``reader`` into the native layer; slot p takes logical expert
    pmap[p] (identity when None). ``save``: the cpu_save folder, for readers of float weights.
    ``biases``: (gate, up, down) fp32 over the logical experts, or None; a reader of experts with
    biases (``layer_biases``: gpt-oss) gives its own."""
    reader.check_layer(target.layer, target.method, target.hidden_size, target.intermediate_size,
                       num_experts=target.num_experts if pmap is None else None)
    stored = reader.layer_biases(target.layer) if hasattr(reader, "layer_biases") else None
    if stored is not None:
        biases = stored
    E = reader.num_experts
    if pmap is None:
        pmap = torch.arange(E, dtype=torch.int64)
    if reader.stored_method is None:
        bad = [(p, int(pmap[p])) for p in range(len(pmap)) if target.cpu_slots[p] and not 0 <= int(pmap[p]) < E]
        if bad:
            raise ValueError(f"physical_to_logical_map[{bad[0][0]}] = {bad[0][1]} is out of range: the checkpoint "
                             f"holds {E} experts")
        if save is None:
            _pack_read_experts(native, target, reader, pmap, biases)
            return
        H, I = reader.hidden_size, reader.intermediate_size
        if not saved_layer_ready(save, target.layer, target.method, E, H, I, reader.fingerprint):
            save_layer(save, target.layer, target.method, E, H, I,
                       lambda e, j: (reader.expert(target.layer, e, j), H * I * reader.bytes_per_weight()),
                       reader.record(), target.threads)
        reader = ConvertedCheckpoint(save)
        reader.check_layer(target.layer, target.method, target.hidden_size, target.intermediate_size)
    with reader.layer_arrays(target.layer, target.experts_read(pmap, E)) as arrays:
        pack_quantized(native, arrays, pmap, E, getattr(reader, "private_parts", ()), biases)


def _pack_read_experts(native, target: LayerTarget, reader: Checkpoint, pmap: torch.Tensor, biases) -> None:
    """Float weights quantized at load: only the logical experts that CPU slots use are read, into
    compact fp32 stacks, and the map is rewritten to index them."""
    needed = sorted(target.experts_read(pmap, reader.num_experts))
    compact = {e: i for i, e in enumerate(needed)}
    n = max(len(needed), 1)
    H, I = reader.hidden_size, reader.intermediate_size
    gate, up, down = torch.zeros(n, I, H), torch.zeros(n, I, H), torch.zeros(n, H, I)
    for e, i in compact.items():
        for j, t in enumerate((gate, up, down)):
            t[i] = reader.expert(target.layer, e, j)
    cpu = target.cpu_slots
    cmap = torch.tensor([compact.get(int(pmap[p]), 0) if cpu[p] else 0 for p in range(len(pmap))], dtype=torch.int64)
    if biases is not None:  # rows of the compact experts
        rows = needed or [0]
        biases = tuple(None if b is None else torch.as_tensor(b)[rows].contiguous() for b in biases)
    pack_float(native, gate, up, down, cmap, n, biases)


def load_tensors(native, target: LayerTarget, weights: tuple, pmap: torch.Tensor, save: Optional[str] = None,
                 biases=None) -> None:
    """Loads float weights (gate, up, down), checked by the caller; slot p takes expert pmap[p].
    With ``save``, all their experts are quantized into that folder first, then loaded from it.
    ``biases``: (gate, up, down) fp32 over the same experts, or None."""
    gate, up, down = weights
    E = gate.shape[0]
    if save is None:
        pack_float(native, gate, up, down, pmap, E, biases)
        return

    def expert(e, j):
        w = weights[j][e]
        return w.to(torch.float32), w.numel() * w.element_size()

    save_layer(save, target.layer, target.method, E, target.hidden_size, target.intermediate_size, expert,
               {"fingerprint": TENSORS_SOURCE}, target.threads)
    load_layer(native, target, ConvertedCheckpoint(save), pmap, biases=biases)
