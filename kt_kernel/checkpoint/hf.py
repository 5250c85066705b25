"""The Hugging Face checkpoint reader: the tensor index of a safetensors folder (shared with
kt_kernel.models' checks) and the routed experts, one projection of one expert at a time.

Two expert layouts are found in real checkpoints, and both are read:
  per-expert  model.layers.{L}.{mlp|block_sparse_moe}.experts.{e}.{gate_proj|up_proj|down_proj}.weight
              (Mixtral: w1 = gate, w3 = up, w2 = down), each [I, H] / [H, I]
  fused       model.layers.{L}.mlp.experts.gate_up_proj [E, 2I, H] (gate rows first) and
              model.layers.{L}.mlp.experts.down_proj [E, H, I] (transformers >= 5 save_pretrained)
FP8 experts (e4m3 with one scale per block of ``weight_block_size``: ``weight_scale_inv`` beside
each per-expert weight, as DeepSeek-V3 stores them, or ``gate_up_proj_scale_inv`` /
``down_proj_scale_inv`` [E, ceil(N/bn), ceil(K/bk)] beside fused ones, as transformers >= 5 saves
them; scales fp32, bf16 or ue8m0) are dequantized here on the CPU, a whole [N, K] matrix at a
time: w = float(q) * scale_inv[n // bn, k // bk]; the fused gate_up matrix is dequantized before
it is split into gate and up.

The geometry comes from config.json (or its nested ``text_config``) under the names real configs
use; which layers are MoE is checked against the tensors found.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.safetensors_io import NUMPY_DTYPES, SafetensorsError, list_shards, read_header
from kt_kernel.hf_config import EXPERT_COUNT_FIELDS, INTERMEDIATE_FIELDS, moe_layer_indices, read_config, text_config

__all__ = ["TensorIndex", "index_tensors", "HFCheckpoint", "open_hf_checkpoint", "dequantize_fp8",
           "quantize_fp8"]

_PROJ = {"gate_proj": 0, "up_proj": 1, "down_proj": 2, "w1": 0, "w3": 1, "w2": 2}
_PER_EXPERT = re.compile(r"^(?:.*\.)?layers\.(\d+)\.([A-Za-z_]+)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)"
                         r"\.(weight|weight_scale_inv)$")
_FUSED = re.compile(r"^(?:.*\.)?layers\.(\d+)\.([A-Za-z_]+)\.experts\.(gate_up_proj|down_proj)(?:\.weight)?$")
_FUSED_SCALE = re.compile(r"^(?:.*\.)?layers\.(\d+)\.([A-Za-z_]+)\.experts\.(gate_up_proj|down_proj)_scale_inv$")
# gpt-oss's fused experts carry biases (and interleave gate and up along 2I)
_FUSED_BIAS = re.compile(r"^(?:.*\.)?layers\.(\d+)\.([A-Za-z_]+)\.experts\.(gate_up_proj|down_proj)_bias$")
GPT_OSS_ALPHA = 1.702  # gpt-oss's swish slope: fixed by the model, its config.json may not name it


def gpt_oss_activation(cfg: dict) -> tuple:
    """(swiglu_limit, swiglu_alpha) of gpt-oss experts from their config: the clamp (0: none) and
    the slope, 1.702 unless the config names it."""
    return float(cfg.get("swiglu_limit") or 0.0), float(cfg.get("swiglu_alpha", GPT_OSS_ALPHA))


def checkpoint_activation(cfg: dict):
    """gpt_oss_activation of a gpt-oss config, else None (plain SwiGLU)."""
    return gpt_oss_activation(cfg) if cfg.get("model_type") == "gpt_oss" else None


_TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F8_E4M3": torch.float8_e4m3fn}
_SCALE_DTYPES = ("F32", "BF16", "F8_E8M0")  # ue8m0: a power of two per block
_VIEW_AS = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu}
INPUT_TYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "fp8": "F8_E4M3"}


def as_torch(raw: np.ndarray, dtype: str) -> torch.Tensor:
    """The torch tensor of a safetensors tensor's elements read as NUMPY_DTYPES gives them (bf16
    and fp8 as raw bits), in torch's own dtype; shares raw's memory."""
    out = torch.from_numpy(raw)
    return out.view(_VIEW_AS[dtype]) if dtype in _VIEW_AS else out


def dequantize_fp8(q: torch.Tensor, scale_inv: torch.Tensor, block) -> torch.Tensor:
    """fp32 weights of an e4m3 [N, K] tensor with one fp32 scale per [bn, bk] block."""
    bn, bk = block
    N, K = q.shape
    s = scale_inv.to(torch.float32).repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]
    return q.to(torch.float32) * s


def quantize_fp8(w: torch.Tensor, block, ue8m0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 weights, scale_inv per [bn, bk] block) of an fp32 [N, K] matrix, as DeepSeek-V3 stores
    them: scale_inv = amax / 448 per block in fp32, or with ue8m0 rounded up to a power of two and
    stored as float8_e8m0fnu. For writing fp8 checkpoints (the tests' and benchmarks' synthetic ones);
    dequantize_fp8 reads them back."""
    bn, bk = block
    N, K = w.shape
    sn, sk = -(-N // bn), -(-K // bk)
    pad = torch.zeros(sn * bn, sk * bk)
    pad[:N, :K] = w
    scale = pad.reshape(sn, bn, sk, bk).abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0
    if ue8m0:
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    q = (w / scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]).to(torch.float8_e4m3fn)
    return q, scale.to(torch.float8_e8m0fnu) if ue8m0 else scale


@dataclass
class TensorIndex:
    """Every tensor of a checkpoint folder's safetensors files, from their headers (no weights)."""
    tensors: dict             # key -> (file name, safetensors header entry)
    data_start: dict          # file name -> byte where its data begins
    fingerprint: str          # sha256 of config.json and every file's name, size and header


def index_tensors(path, error=ConversionError) -> TensorIndex:
    """Reads the headers of the safetensors files of ``path`` (those model.safetensors.index.json
    names when it exists, else every *.safetensors file); raises ``error`` (a ValueError subclass
    of the caller's) naming the file or key when a file is missing, truncated or not safetensors,
    or the index maps a key to a file that does not hold it."""
    path = Path(path)
    try:
        files, weight_map = list_shards(path)
    except SafetensorsError as e:
        raise error(str(e)) from e
    if not files:
        other = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found {', '.join(other)}: convert them to safetensors)" if other else ""
        raise error(f"{path} holds no .safetensors weight files{hint}")
    tensors, starts, digest = {}, {}, hashlib.sha256((path / "config.json").read_bytes())
    for name in files:
        if not (path / name).exists():
            raise error(f"model.safetensors.index.json names {name}, which is not in {path}")
        try:
            h = read_header(path / name)
        except SafetensorsError as e:
            raise error(str(e)) from e
        starts[name] = h.data_start
        digest.update(f"{name}:{h.file_size}:".encode())
        digest.update(json.dumps(h.tensors, sort_keys=True).encode())
        for k, t in h.tensors.items():
            tensors[k] = (name, t)
    if weight_map is not None:
        lost = [k for k, f in weight_map.items() if k not in tensors]
        if lost:
            raise error(f"model.safetensors.index.json maps {lost[0]} to {weight_map[lost[0]]}, which does not hold "
                        "it" + (f" ({len(lost)} such keys)" if len(lost) > 1 else ""))
    return TensorIndex(tensors, starts, digest.hexdigest())


@dataclass
class HFCheckpoint:
    """A Hugging Face checkpoint's routed experts as float weights (``stored_method`` None: the
    packer quantizes them to the layer's format at load)."""
    kind = "hf"
    stored_method = None
    path: Path
    config: dict              # the text model's config (text_config when nested)
    num_layers: int
    num_experts: int
    hidden_size: int
    intermediate_size: int
    moe_layers: list
    layout: str               # "per-expert" or "fused"
    dtype: str                # safetensors dtype of the expert weights
    fp8_block: Optional[tuple]
    tensors: dict             # key -> (file name, tensor entry)
    expert_keys: dict         # layer -> {(e, proj) or (proj,): key}
    scale_keys: dict          # layer -> {(e, proj) or (proj,): key}
    fingerprint: str
    data_start: dict          # file name -> byte where its data begins
    # gpt-oss: gate and up interleaved along 2I (gate rows 0::2), the experts' biases
    # (layer -> {(proj,): key}) and their activation (swiglu_limit, swiglu_alpha)
    interleaved: bool = False
    bias_keys: dict = field(default_factory=dict)
    activation: Optional[tuple] = None

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        """Raises ConversionError unless ``layer`` is an MoE layer of this geometry (and of
        ``num_experts`` experts, when given: the identity map of a load without one)."""
        where = str(self.path / "config.json")
        _check("hidden_size", self.hidden_size, hidden_size, where)
        _check("intermediate_size (moe_intermediate_size)", self.intermediate_size, intermediate_size, where)
        if layer not in self.moe_layers:
            raise ConversionError(f"{self.path}: layer_idx {layer} is not an MoE layer (MoE layers: {self.moe_layers})")
        if num_experts is not None:
            _check("num_experts", self.num_experts, num_experts, where + " (no physical_to_logical_map given)")

    def non_expert_keys(self) -> list:
        taken = {k for d in (*self.expert_keys.values(), *self.scale_keys.values(), *self.bias_keys.values())
                 for k in d.values()}
        return sorted(k for k in self.tensors if k not in taken)

    def layer_biases(self, layer: int):
        """fp32 (gate [E, I], up [E, I], down [E, H]) expert biases (gpt-oss), or None: the experts have none."""
        keys = self.bias_keys.get(layer)
        if not keys:
            return None
        gu, dn = (self.read(keys[(name,)]).to(torch.float32) for name in ("gate_up_proj", "down_proj"))
        return gu[:, 0::2].contiguous(), gu[:, 1::2].contiguous(), dn.contiguous()

    # custom, not safe_open's get_slice: safe_open maps the whole file, and the pages read through
    # the map would stay in this process's RSS for as long as it is open (the converter's bound
    # of one layer in memory would grow to the source checkpoint's size)
    def read(self, key: str, index: Optional[int] = None) -> torch.Tensor:
        """Tensor ``key`` (or its slice ``index`` along dim 0) read with pread into private memory:
        no map of the source file, so its pages do not stay in this process's RSS."""
        fname, t = self.tensors[key]
        shape = list(t["shape"])
        b, e = t["data_offsets"]
        start = self.data_start[fname] + b
        if index is not None:
            step = (e - b) // shape[0]
            start, e, shape = start + index * step, None, shape[1:]
            n = step
        else:
            n = e - b
        buf = np.empty(n, dtype=np.uint8)
        fd = os.open(self.path / fname, os.O_RDONLY)
        try:
            got = os.preadv(fd, [buf], start)
        finally:
            os.close(fd)
        if got != n:
            raise ConversionError(f"{self.path / fname} is truncated: reading {key} got {got} of {n} bytes")
        return as_torch(buf.view(NUMPY_DTYPES[t["dtype"]]).reshape(shape), t["dtype"])

    def expert(self, layer: int, e: int, proj: int) -> torch.Tensor:
        """Weights of one projection (0 gate, 1 up, 2 down) of one expert, fp32 [N, K]."""
        keys, I = self.expert_keys[layer], self.intermediate_size
        if self.layout == "fused":
            name, rows = ("down_proj", self.hidden_size) if proj == 2 else ("gate_up_proj", 2 * I)
            w = self._fused(keys[(name,)], e, rows)
            if self.dtype == "F8_E4M3":
                w = dequantize_fp8(w, self.read(self.scale_keys[layer][(name,)], e), self.fp8_block)
            if proj != 2:
                w = w[proj::2] if self.interleaved else w[:I] if proj == 0 else w[I:]
            return w.to(torch.float32)
        w = self.read(keys[(e, proj)])
        if self.dtype == "F8_E4M3":
            return dequantize_fp8(w, self.read(self.scale_keys[layer][(e, proj)]), self.fp8_block)
        return w.to(torch.float32)

    def _fused(self, key: str, e: int, rows: int) -> torch.Tensor:
        w = self.read(key, e)
        # stored transposed ([E, H, 2I] / [E, I, H]), as some checkpoints do; gpt-oss's always are
        # (its shapes cannot tell where H = 2I)
        if self.interleaved or w.shape[0] != rows:
            w = w.t()
        return w

    def record(self) -> dict:
        """What converted folders record about their source."""
        return {"path": str(self.path.resolve()), "fingerprint": self.fingerprint, "layout": self.layout,
                "dtype": self.dtype}

    def bytes_per_weight(self) -> int:
        return {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}[self.dtype]

    def layer_bytes(self, layer: int) -> int:
        """Bytes of this layer's expert tensors in the source files."""
        ks = list(self.expert_keys[layer].values()) + list(self.scale_keys.get(layer, {}).values())
        total = 0
        for k in ks:
            b, e = self.tensors[k][1]["data_offsets"]
            total += e - b
        return total


def _check(field: str, got, want, where: str) -> None:
    if got != want:
        raise ConversionError(f"{where}: {field} is {got!r} in config.json but {want!r} in this KTMoEWrapper")


def _first(cfg: dict, fields, what: str, file: Path):
    for f in fields:
        if cfg.get(f):
            return f, int(cfg[f])
    raise ConversionError(f"{file} has none of the {what} fields {', '.join(fields)}")


def open_hf_checkpoint(path, input_type: Optional[str] = None) -> HFCheckpoint:
    """Reads config.json and the safetensors headers of the checkpoint in ``path`` (no weights)
    and checks that every MoE layer has all of its experts, with the shapes config.json gives."""
    path = Path(path)
    cfg_file = path / "config.json"
    raw = read_config(path, ConversionError)
    cfg = text_config(raw)
    e_field, E = _first(cfg, EXPERT_COUNT_FIELDS, "expert-count", cfg_file)
    i_field, I = _first(cfg, INTERMEDIATE_FIELDS, "expert intermediate size", cfg_file)
    H = int(cfg["hidden_size"])
    L = int(cfg["num_hidden_layers"])

    index = index_tensors(path)
    tensors = index.tensors

    experts, scales, biases, layouts, dtypes = {}, {}, {}, set(), set()
    for k, (_, t) in tensors.items():
        m = _PER_EXPERT.match(k)
        if m and int(m.group(1)) < L:
            layer, e, proj, kind = int(m.group(1)), int(m.group(3)), _PROJ[m.group(4)], m.group(5)
            if kind == "weight":
                experts.setdefault(layer, {})[(e, proj)] = k
                layouts.add("per-expert")
                dtypes.add(t["dtype"])
            else:
                scales.setdefault(layer, {})[(e, proj)] = k
            continue
        m = _FUSED_SCALE.match(k)
        if m and int(m.group(1)) < L:
            scales.setdefault(int(m.group(1)), {})[(m.group(3),)] = k
            continue
        m = _FUSED_BIAS.match(k)
        if m and int(m.group(1)) < L:
            biases.setdefault(int(m.group(1)), {})[(m.group(3),)] = k
            continue
        m = _FUSED.match(k)
        if m and int(m.group(1)) < L and len(t["shape"]) == 3:
            experts.setdefault(int(m.group(1)), {})[(m.group(3),)] = k
            layouts.add("fused")
            dtypes.add(t["dtype"])
    if not experts:
        raise ConversionError(f"{path}: no routed-expert tensors found (looked for "
                              "model.layers.L.mlp.experts.E.gate_proj.weight and experts.gate_up_proj)")
    if len(layouts) > 1 or len(dtypes) > 1:
        raise ConversionError(f"{path} mixes expert layouts {sorted(layouts)} / dtypes {sorted(dtypes)}")
    layout, dtype = layouts.pop(), dtypes.pop()
    if dtype not in _TORCH:
        raise ConversionError(f"{path}: expert weights have dtype {dtype}; supported: {', '.join(_TORCH)}")
    if input_type is not None and INPUT_TYPES[input_type] != dtype:
        raise ConversionError(f"--input-type {input_type} but the expert weights of {path} are {dtype}")

    moe_layers = sorted(experts)
    expected = moe_layer_indices(cfg, L)
    missing = sorted(set(expected) - set(moe_layers))
    if missing:
        raise ConversionError(f"{path}: config.json makes layer {missing[0]} an MoE layer ({e_field}={E}, "
                              f"first_k_dense_replace={cfg.get('first_k_dense_replace', 0)}, num_hidden_layers={L}), "
                              f"but the checkpoint has no experts for it ({len(missing)} such layers)")

    block = None
    if dtype == "F8_E4M3":
        q = raw.get("quantization_config") or cfg.get("quantization_config") or {}
        block = tuple(q.get("weight_block_size") or (128, 128))
    want = {0: [I, H], 1: [I, H], 2: [H, I]}
    for layer in moe_layers:
        keys = experts[layer]
        if layout == "per-expert":
            for e in range(E):
                for proj in range(3):
                    k = keys.get((e, proj))
                    if k is None:
                        raise ConversionError(f"{path}: layer {layer} lacks expert {e}'s "
                                              f"{('gate', 'up', 'down')[proj]} projection ({e_field}={E})")
                    if tensors[k][1]["shape"] != want[proj]:
                        raise ConversionError(f"{k} has shape {tuple(tensors[k][1]['shape'])}, but config.json "
                                              f"{i_field}={I} and hidden_size={H} make it {tuple(want[proj])}")
                    if dtype == "F8_E4M3":
                        sk = scales.get(layer, {}).get((e, proj))
                        if sk is None:
                            raise ConversionError(f"{k} is fp8 but the checkpoint has no {k}_scale_inv")
                        N, K = want[proj]
                        want_s = [-(-N // block[0]), -(-K // block[1])]
                        if tensors[sk][1]["shape"] != want_s:
                            raise ConversionError(f"{sk} has shape {tuple(tensors[sk][1]['shape'])}, but weight_block_size "
                                                  f"{list(block)} makes it {tuple(want_s)}")
            extra = sorted({e for e, _ in keys} - set(range(E)))
            if extra:
                raise ConversionError(f"{path}: layer {layer} has expert {extra[0]}, but config.json {e_field}={E}")
        else:
            for name, shapes in (("gate_up_proj", ([E, 2 * I, H], [E, H, 2 * I])), ("down_proj", ([E, H, I], [E, I, H]))):
                k = keys.get((name,))
                if k is None:
                    raise ConversionError(f"{path}: layer {layer} has no experts.{name}")
                if tensors[k][1]["shape"] not in shapes:
                    raise ConversionError(f"{k} has shape {tuple(tensors[k][1]['shape'])}, but config.json "
                                          f"{e_field}={E}, {i_field}={I} and hidden_size={H} make it {tuple(shapes[0])}")
            if dtype == "F8_E4M3":
                for name, (N, K) in (("gate_up_proj", (2 * I, H)), ("down_proj", (H, I))):
                    k = keys[(name,)]
                    if tensors[k][1]["shape"] != [E, N, K]:
                        raise ConversionError(f"{k} is fp8 stored transposed {tuple(tensors[k][1]['shape'])}; fp8 "
                                              f"fused experts are read as [E, N, K] = {(E, N, K)}")
                    s = scales.get(layer, {}).get((name,))
                    want_s = [E, -(-N // block[0]), -(-K // block[1])]
                    if s is None:
                        raise ConversionError(f"{k} is fp8 but the checkpoint has no {k}_scale_inv")
                    if tensors[s][1]["shape"] != want_s:
                        raise ConversionError(f"{s} has shape {tuple(tensors[s][1]['shape'])}, but weight_block_size "
                                              f"{list(block)} makes it {tuple(want_s)}")
    gpt_oss = cfg.get("model_type") == "gpt_oss"
    if gpt_oss and layout != "fused":
        raise ConversionError(f"{path}: a gpt-oss checkpoint's experts are fused (experts.gate_up_proj), not per expert")
    for layer in moe_layers if gpt_oss else biases:
        for name, shape in (("gate_up_proj", [E, 2 * I]), ("down_proj", [E, H])):
            k = biases.get(layer, {}).get((name,))
            if k is None:
                raise ConversionError(f"{path}: layer {layer} has no experts.{name}_bias" +
                                      (" (gpt-oss's experts have biases)" if gpt_oss else
                                       " beside its other expert bias"))
            if tensors[k][1]["shape"] != shape:
                raise ConversionError(f"{k} has shape {tuple(tensors[k][1]['shape'])}, but config.json makes it "
                                      f"{tuple(shape)}")
            if tensors[k][1]["dtype"] not in _TORCH or tensors[k][1]["dtype"] == "F8_E4M3":
                raise ConversionError(f"{k} has dtype {tensors[k][1]['dtype']}; biases are read as BF16, F16 or F32")
    for layer in scales:
        for k in scales[layer].values():
            if tensors[k][1]["dtype"] not in _SCALE_DTYPES:
                raise ConversionError(f"{k} has dtype {tensors[k][1]['dtype']}; fp8 block scales are read as "
                                      f"{', '.join(_SCALE_DTYPES)}")
    return HFCheckpoint(path=path, config=cfg, num_layers=L, num_experts=E, hidden_size=H, intermediate_size=I,
                        moe_layers=moe_layers, layout=layout, dtype=dtype, fp8_block=block, tensors=tensors,
                        expert_keys=experts, scale_keys=scales, fingerprint=index.fingerprint,
                        data_start=index.data_start, interleaved=gpt_oss, bias_keys=biases,
                        activation=checkpoint_activation(cfg))
