"""An FP8 release's experts loaded as they are stored (method FP8): the e4m3 bytes from the
safetensors files' memory maps, the block scales widened to the fp8_g128 format's one scale per
channel and group of 128 k. Nothing is rounded: the layer computes with exactly the weights
``float(q) * weight_scale_inv[n // bn, k // bk]`` that the checkpoint defines.

Both expert layouts of kt_kernel.checkpoint.hf: per-expert ``...experts.{e}.{proj}.weight`` with
``weight_scale_inv`` beside it (DeepSeek-V3/R1, Kimi-K2, Qwen3-*-FP8, GLM-4.5-FP8), and fused
``experts.gate_up_proj`` [E, 2I, H] / ``down_proj`` [E, H, I] with ``*_scale_inv`` (transformers
>= 5). ``weight_block_size`` [bn, bk] needs bk = 128 (every release uses [128, 128]); bn may be
anything. Scales may be fp32, bf16 or ue8m0 (2^(s - 127)).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.hf import HFCheckpoint
from kt_kernel.checkpoint.safetensors_io import MappedFolder, as_float32

__all__ = ["FP8Checkpoint", "FP8_METHOD", "GROUP"]

FP8_METHOD = "FP8"
GROUP = 128  # k per scale of the fp8_g128 format
_PROJ = ("gate", "up", "down")


def _scale_as_f32(s: np.ndarray, dtype: str, key: str) -> np.ndarray:
    out = as_float32(s, dtype)
    bad = ~np.isfinite(out)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ConversionError(f"{key}{list(at)} is {out[at]}: fp8 block scales must be finite")
    return out


class FP8Checkpoint:
    """The FP8 experts of an HF checkpoint (``hf.dtype`` F8_E4M3), as the fp8_g128 format's
    logical arrays; see the module's docstring."""
    kind = "hf-fp8"
    stored_method = FP8_METHOD
    private_parts = ("scale",)  # widened in memory; the values are views of the file maps

    def __init__(self, hf: HFCheckpoint):
        if hf.dtype != "F8_E4M3":
            raise ConversionError(f"{hf.path}: method {FP8_METHOD} loads fp8 (F8_E4M3) experts as they are; these are "
                                  f"{hf.dtype}, which method {FP8_METHOD} quantizes from a float checkpoint instead")
        bn, bk = hf.fp8_block
        if bk != GROUP or bn < 1:
            raise ConversionError(f"{hf.path / 'config.json'}: quantization_config.weight_block_size is {[bn, bk]}; method "
                                  f"{FP8_METHOD} runs blocks of [any, {GROUP}] as stored (releases use [128, 128])")
        self.hf = hf
        for name in ("path", "num_experts", "hidden_size", "intermediate_size", "moe_layers", "fingerprint"):
            setattr(self, name, getattr(hf, name))

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        if method != FP8_METHOD:
            raise ConversionError(f"{self.path} stores fp8 experts, read as they are by method {FP8_METHOD}; method "
                                  f"{method!r} takes float weights")
        self.hf.check_layer(layer, method, hidden_size, intermediate_size, num_experts)

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, part) -> a list of one array per logical expert (None for the experts not in
        ``experts``): part "qweight", the e4m3 bytes uint8 [N, K] (zero-copy views of the mapped
        files), and part "scale", fp32 [N, ceil(K / 128)]. Valid inside the block."""
        hf, E, H, I = self.hf, self.num_experts, self.hidden_size, self.intermediate_size
        bn = hf.fp8_block[0]
        maps = MappedFolder(hf.path, hf.tensors)
        mapped = maps.array

        def scale(key: str, index: Optional[int], rows: int) -> np.ndarray:
            s = mapped(key)
            s = s if index is None else s[index]
            s = _scale_as_f32(s, hf.tensors[key][1]["dtype"], key if index is None else f"{key}[{index}]")
            return np.ascontiguousarray(np.repeat(s, bn, axis=0)[:rows])

        arrays = {(p, part): [None] * E for p in _PROJ for part in ("qweight", "scale")}
        keys, skeys = hf.expert_keys[layer], hf.scale_keys[layer]
        try:
            for e in sorted(experts):
                if hf.layout == "per-expert":
                    for j, p in enumerate(_PROJ):
                        arrays[(p, "qweight")][e] = mapped(keys[(e, j)])
                        arrays[(p, "scale")][e] = scale(skeys[(e, j)], None, H if j == 2 else I)
                else:
                    gu, gus = mapped(keys[("gate_up_proj",)])[e], scale(skeys[("gate_up_proj",)], e, 2 * I)
                    for j, rows in ((0, slice(0, I)), (1, slice(I, 2 * I))):
                        arrays[(_PROJ[j], "qweight")][e] = gu[rows]
                        arrays[(_PROJ[j], "scale")][e] = np.ascontiguousarray(gus[rows])
                    arrays[("down", "qweight")][e] = mapped(keys[("down_proj",)])[e]
                    arrays[("down", "scale")][e] = scale(skeys[("down_proj",)], e, H)
            yield arrays
        finally:
            arrays.clear()  # the maps close below only once no view of them is left
            maps.close()
