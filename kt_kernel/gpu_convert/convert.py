"""GPU-side quantization of a Hugging Face MoE checkpoint: GPTQ (or round-to-nearest) W4A16 / W8A16
on the CPU, layer by layer, written in compressed-tensors' pack-quantized format.

Sequential calibration, with bounded memory:

1. The calibration windows enter layer 0 as the model computes them (LayerSource.layer_inputs).
2. For each decoder layer in turn: its weights are read from the checkpoint's memory maps (fp32);
   one pass over the windows collects the Hessian 2 X^T X / T of every Linear's input and the
   routed experts' inputs with their routing; each Linear is quantized against its Hessian; each
   routed expert's gate and up against the Hessian of the tokens routed to it, its down against
   that of its own intermediate activations computed with the quantized gate and up. An expert
   routed fewer than ``min_expert_tokens`` tokens is calibrated on every token of the layer, as if
   all were routed to it (reported per expert). The layer, now holding the quantized weights, runs
   the windows again: its outputs are the next layer's inputs, so each layer is calibrated on what
   the quantized model feeds it. Then the layer goes back to the meta device.
3. After each layer its packed tensors, the next layer's inputs and the report are committed to
   ``OUTPUT/.kt_gpu_convert`` (written to a temporary name, fsynced, renamed; the state file last):
   a run killed at any point resumes from the last committed layer and writes the same bytes.
4. The checkpoint is assembled in shards of ``max_shard_size`` bytes: each quantized Linear's
   ``weight`` becomes ``weight_packed`` (int32), ``weight_scale`` (the checkpoint's dtype),
   ``weight_shape`` and, when asymmetric, ``weight_zero_point``; every other tensor is copied as
   stored; config.json gets compressed-tensors' quantization_config.

The source may be an FP8 release (quantization_config fp8, e4m3 weights with weight_scale_inv
blocks): its weights are decoded on reading (LayerSource.stored), its block scales are not copied,
and an FP8 weight left unquantized is written decoded, in bf16.

Resident at a time: one decoder layer in fp32, the Hessians of its Linears (fp64, K x K each) or of
one expert, and the windows' hidden states (samples x length x hidden, fp32, twice).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from kt_kernel.gpu_convert.gptq import QuantizedLinear, gptq_quantize, hessian, rtn_quantize

__all__ = ["GpuQuantSettings", "QUANT_TYPES", "convert_gpu_weights", "DEFAULT_IGNORE", "REPORT_NAME", "summary"]

QUANT_TYPES = {"W4A16": 4, "W8A16": 8}
# the routers: real checkpoints' and serving engines' mlp.gate is a Linear kept in full precision
DEFAULT_IGNORE = ("lm_head", "re:.*mlp.gate$", "re:.*block_sparse_moe.gate$")
WORK_DIR = ".kt_gpu_convert"
REPORT_NAME = "kt_gptq_report.json"
_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


@dataclass
class GpuQuantSettings:
    quant_type: str = "W4A16"
    group_size: Optional[int] = None      # None: 128 for W4A16, per channel (0) for W8A16
    symmetric: bool = True
    act_order: bool = False
    damp: float = 0.01
    algorithm: str = "gptq"               # or "rtn": round to nearest, the baseline
    ignore: tuple = ()                    # more module names / "re:" patterns left unquantized
    num_samples: int = 128
    max_length: int = 512
    min_expert_tokens: int = 16
    dataset: Optional[str] = None         # None: the built-in corpus
    max_shard_size: int = 5 * 2**30

    def __post_init__(self):
        if self.quant_type not in QUANT_TYPES:
            raise ValueError(f"quant_type={self.quant_type!r}: supported {', '.join(QUANT_TYPES)}")
        if self.group_size is None:
            self.group_size = 128 if self.quant_type == "W4A16" else 0
        if not isinstance(self.group_size, int) or self.group_size < 0:
            raise ValueError(f"group_size={self.group_size!r} must be a positive integer, or 0 for one scale per channel")
        if self.algorithm not in ("gptq", "rtn"):
            raise ValueError(f"algorithm={self.algorithm!r}: gptq or rtn")
        if not 0 <= self.damp < 1:
            raise ValueError(f"damp={self.damp} must be in [0, 1)")
        if self.num_samples < 1 or self.max_length < 2 or self.min_expert_tokens < 0:
            raise ValueError(f"num_samples={self.num_samples}, max_length={self.max_length} and min_expert_tokens="
                             f"{self.min_expert_tokens} must be at least 1, 2 and 0")
        if self.max_shard_size < 1:
            raise ValueError(f"max_shard_size={self.max_shard_size} must be positive")
        self.ignore = tuple(self.ignore)

    @property
    def num_bits(self) -> int:
        return QUANT_TYPES[self.quant_type]

    def key(self, source_digest: str) -> str:
        """Identifies a run: a resume must have the same settings and source."""
        return hashlib.sha256(json.dumps([asdict(self), source_digest], sort_keys=True).encode()).hexdigest()


def _ignored(name: str, patterns) -> bool:
    """compressed-tensors' rule: "re:" patterns match from the start of the name, others the whole name."""
    return any(re.match(p[3:], name) if p.startswith("re:") else p == name for p in patterns)


def quantization_config(s: GpuQuantSettings) -> dict:
    """config.json's quantization_config, as the compressed-tensors package writes it."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    args = QuantizationArgs(num_bits=s.num_bits, type="int", symmetric=s.symmetric,
                            strategy="group" if s.group_size else "channel", group_size=s.group_size or None,
                            actorder="static" if s.act_order else None)
    cfg = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                             ignore=list(DEFAULT_IGNORE) + list(s.ignore), format="pack-quantized",
                             quantization_status="compressed")
    return cfg.model_dump()


def _packed(q: QuantizedLinear) -> dict:
    """The compressed-tensors tensors of one quantized weight (local names)."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    out = {"weight_packed": pack_to_int32(q.q, q.num_bits), "weight_scale": q.scale.contiguous(),
           "weight_shape": torch.tensor(list(q.q.shape), dtype=torch.int64)}
    if not q.symmetric:
        out["weight_zero_point"] = pack_to_int32(q.zero_point, q.num_bits, packed_dim=0).contiguous()
    return out


def _np(t: torch.Tensor):
    """A tensor for safetensors_io.write_file: numpy, or (dtype name, shape, bytes) for bf16."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return ("BF16", list(t.shape), t.view(torch.int16).numpy())
    return t.numpy()


# ---- one layer -------------------------------------------------------------------------------

class _Calibration:
    """Hooks of one layer's calibration pass: X^T X of each Linear's input, the experts' inputs."""

    def __init__(self, linears: dict, experts):
        self.acc = {name: None for name in linears}
        self.rows = {name: 0 for name in linears}
        self.expert_x, self.expert_ids = [], []
        self.handles = [m.register_forward_pre_hook(self._linear(name)) for name, m in linears.items()]
        if experts is not None:
            self.handles.append(experts.register_forward_pre_hook(self._experts, with_kwargs=True))

    def _linear(self, name):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            xtx = (x.T @ x).double()  # fp32 products of one window, summed in fp64
            self.acc[name] = xtx if self.acc[name] is None else self.acc[name] + xtx
            self.rows[name] += x.shape[0]
        return hook

    def _experts(self, module, args, kwargs):
        params = list(args) + [kwargs[k] for k in ("hidden_states", "top_k_index", "top_k_weights") if k in kwargs]
        self.expert_x.append(params[0].detach().reshape(-1, params[0].shape[-1]).float())
        self.expert_ids.append(params[1].detach().reshape(params[0].numel() // params[0].shape[-1], -1))

    def hessian(self, name: str) -> torch.Tensor:
        return (2.0 / max(self.rows[name], 1)) * self.acc[name]

    def close(self):
        for h in self.handles:
            h.remove()


def _run(layer, inputs: list, kwargs_list) -> list:
    args, kwargs = kwargs_list
    outs = []
    with torch.no_grad():
        for x in inputs:
            y = layer(x, *args, **kwargs)
            outs.append((y[0] if isinstance(y, tuple) else y).float())
    return outs


class _LayerQuantizer:
    def __init__(self, s: GpuQuantSettings, scale_dtype: torch.dtype):
        self.s, self.scale_dtype = s, scale_dtype

    @staticmethod
    def check_group(name: str, K: int, group: int) -> None:
        if group and K % group:
            raise ValueError(f"{name}: group_size={group} does not divide its input dimension {K}; choose a group "
                             f"size that divides it or leave it unquantized (--ignore {name})")

    def quantize(self, weights: list, h: torch.Tensor, x: Optional[torch.Tensor] = None) -> list:
        """[(name, QuantizedLinear, GPTQ-or-RTN error, RTN error)] of weights [(name, w [N_i, K])]
        that share their inputs (and so H; x: those inputs [T, K] when at hand): quantized as one
        stack, one factorization of H."""
        s = self.s
        for name, w in weights:
            self.check_group(name, w.shape[1], s.group_size)
        w = torch.cat([w for _, w in weights]) if len(weights) > 1 else weights[0][1]
        rtn = rtn_quantize(w, s.num_bits, s.group_size, s.symmetric, scale_dtype=self.scale_dtype)
        q = rtn if s.algorithm == "rtn" else gptq_quantize(
            w, h, s.num_bits, s.group_size, s.symmetric, act_order=s.act_order, damp=s.damp,
            scale_dtype=self.scale_dtype)
        err_q, err_rtn = _row_errors(w, [q.dequantize(), rtn.dequantize()], h, x)
        out, r0 = [], 0
        for name, wi in weights:
            r1 = r0 + wi.shape[0]
            out.append((name, q.rows(r0, r1), float(err_q[r0:r1].sum()), float(err_rtn[r0:r1].sum())))
            r0 = r1
        return out


def _row_errors(w: torch.Tensor, approximations: list, h: torch.Tensor, x: Optional[torch.Tensor]) -> list:
    """Per output row, the mean output error on the calibration inputs of each approximation of w:
    (d H d^T) / 2 = |X d^T|^2 / T for d = w - approximation (gptq.layer_error by row), through X
    when it has fewer rows than columns (T N K operations instead of N K^2), in fp32 (a report)."""
    w = w.float()
    d = torch.cat([w - a.float() for a in approximations])
    if x is not None and x.shape[0] < w.shape[1]:
        y = x.float() @ d.T
        per = (y * y).sum(0, dtype=torch.float64) / x.shape[0]
    else:
        per = ((d @ h.float()) * d).sum(1, dtype=torch.float64) / 2
    return list(per.split(w.shape[0]))


def _kind(name: str) -> str:
    for k in ("self_attn", "shared_expert", "experts"):
        if k in name:
            return {"self_attn": "attention", "shared_expert": "shared expert", "experts": "routed expert"}[k]
    return "dense mlp"


def quantize_layer(source, i: int, inputs: list, kwargs_list, s: GpuQuantSettings, scale_dtype,
                   progress=None) -> tuple:
    """(packed tensors by checkpoint key, report rows, next layer's inputs) of decoder layer ``i``."""
    layer = source.load_layer(i)
    prefix = f"model.layers.{i}."
    experts_name = source.experts.get(i)
    experts = layer.get_submodule(experts_name[len(prefix):]) if experts_name else None
    linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)
               and not _ignored(source.checkpoint_key(prefix + n), DEFAULT_IGNORE + s.ignore)}
    cal = _Calibration(linears, experts)
    try:
        _run(layer, inputs, kwargs_list)
    finally:
        cal.close()
    qz = _LayerQuantizer(s, scale_dtype)
    packed, rows = {}, []
    total = len(linears) + (experts.gate_up_proj.shape[0] if experts is not None else 0)
    done = 0
    with torch.no_grad():
        for n, m in linears.items():
            key = source.checkpoint_key(prefix + n)
            if cal.rows[n] == 0:
                raise RuntimeError(f"{key} received no input during calibration")
            [(_, q, e, e_rtn)] = qz.quantize([(key, m.weight.detach())], cal.hessian(n))
            m.weight.copy_(q.dequantize())
            packed.update({f"{key}.{part}": v for part, v in _packed(q).items()})
            rows.append({"layer": i, "module": key, "kind": _kind(key), "error": e, "rtn_error": e_rtn})
            done += 1
            if progress:
                progress(i, done, total)
        if experts is not None:
            x, ids = torch.cat(cal.expert_x), torch.cat(cal.expert_ids)
            act = experts.act_fn
            I = experts.gate_up_proj.shape[1] // 2
            for e in range(experts.gate_up_proj.shape[0]):
                routed = (ids == e).any(dim=1).nonzero().flatten()
                fallback = routed.numel() < s.min_expert_tokens
                xe = x if fallback else x[routed]
                h_in = hessian(xe)
                keys = [source.expert_key(i, e, p)[:-len(".weight")] for p in range(3)]
                gate, up = experts.gate_up_proj[e, :I], experts.gate_up_proj[e, I:]
                gu = [(key, w) for key, w in ((keys[0], gate), (keys[1], up)) if not _ignored(key, s.ignore)]
                outs = qz.quantize([(key, w.detach()) for key, w in gu], h_in, xe) if gu else []
                for (_, w), (_, q, _, _) in zip(gu, outs):
                    w.copy_(q.dequantize())
                hmid = act(xe @ gate.T) * (xe @ up.T)  # what the quantized gate and up hand the down
                if not _ignored(keys[2], s.ignore):
                    outs += qz.quantize([(keys[2], experts.down_proj[e].detach())], hessian(hmid), hmid)
                    experts.down_proj[e].copy_(outs[-1][1].dequantize())
                for key, q, err, e_rtn in outs:
                    packed.update({f"{key}.{part}": v for part, v in _packed(q).items()})
                    rows.append({"layer": i, "module": key, "kind": "routed expert", "error": err, "rtn_error": e_rtn,
                                 "expert": e, "tokens": int(routed.numel()), "fallback": bool(fallback)})
                done += 1
                if progress:
                    progress(i, done, total)
    nxt = _run(layer, inputs, kwargs_list)
    source.release_layer(i)
    return packed, rows, nxt


# ---- the whole checkpoint --------------------------------------------------------------------

def _check_output(out: Path) -> Path:
    """The work folder of ``out``; refuses a folder that holds anything but an unfinished run of ours."""
    work = out / WORK_DIR
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"--output_dir {out} is a file")
        entries = [p.name for p in out.iterdir() if p.name != WORK_DIR]
        if entries and not work.exists():
            raise FileExistsError(f"--output_dir {out} is not empty ({sorted(entries)[0]}, ...): kt_kernel writes into "
                                  "a new or empty folder, and resumes only its own unfinished runs")
        if entries and work.exists() and not (work / "state.json").exists():
            raise FileExistsError(f"--output_dir {out} holds files of a run that cannot be resumed; use a new folder")
    return work


def _commit_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_inputs(path: Path, inputs: list) -> None:
    from kt_kernel.checkpoint.safetensors_io import write_file

    write_file(path, {f"{j:06d}": x.contiguous().numpy() for j, x in enumerate(inputs)}, {})


def _load_inputs(path: Path) -> list:
    from safetensors.numpy import load_file

    d = load_file(str(path))
    return [torch.from_numpy(d[k].copy()) for k in sorted(d)]


def convert_gpu_weights(model_id, output_dir, settings: Optional[GpuQuantSettings] = None, *,
                        threads: Optional[int] = None, on_layer: Optional[Callable] = None,
                        progress: Optional[Callable] = None) -> dict:
    """Quantizes the Linear weights of the decoder layers of the HF checkpoint ``model_id`` (a
    folder) and writes a compressed-tensors checkpoint to ``output_dir``. Resumes an unfinished
    run into the same folder with the same settings. ``on_layer(i)`` is called after layer i is
    committed; ``progress(layer, done, total)`` after each module or expert. ``threads``: torch's
    threads during the run (the caller's count again afterwards). Returns the report."""
    from kt_kernel.models.errors import CheckpointError

    s = settings or GpuQuantSettings()
    src, out = Path(model_id), Path(output_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"--model_id {src} is not a folder (a Hugging Face checkpoint folder is needed)")
    if not (src / "config.json").is_file():
        raise CheckpointError(f"--model_id {src} has no config.json: not a Hugging Face checkpoint folder")
    raw_cfg = json.loads((src / "config.json").read_text())
    qc = raw_cfg.get("quantization_config") or {}
    if qc and qc.get("quant_method") != "fp8":
        raise CheckpointError(f"{src} is already quantized (quantization_config {qc.get('quant_method', '?')!r}); give "
                              "the bf16/fp16 checkpoint or an FP8 release")
    work = _check_output(out)
    if threads:
        from kt_kernel.threads import torch_threads

        with torch_threads(int(threads)):  # the caller's count again afterwards
            return _convert(src, out, work, s, qc, on_layer, progress)
    return _convert(src, out, work, s, qc, on_layer, progress)


def _convert(src: Path, out: Path, work: Path, s: GpuQuantSettings, qc: dict, on_layer, progress) -> dict:
    from kt_kernel.gpu_convert.calibration import calibration_samples, load_texts
    from kt_kernel.gpu_convert.source import LayerSource
    from kt_kernel.models.checkpoint import unquantized_config
    from kt_kernel.models.tokenizer import load_tokenizer

    config = unquantized_config(src)
    source = LayerSource(src, config, fp8_block=_fp8_block(qc))
    try:
        run_key = s.key(source.index.fingerprint)
        state = {"key": run_key, "done": -1}
        if (work / "state.json").exists():
            state = json.loads((work / "state.json").read_text())
            if state.get("key") != run_key:
                raise FileExistsError(f"{out} holds an unfinished run with other settings or another source; use a new "
                                      "folder or the same options")
        _check_groups(source, s)
        work.mkdir(parents=True, exist_ok=True)
        n_layers = len(source.layers)
        windows = calibration_samples(load_tokenizer(src), load_texts(s.dataset), s.num_samples, s.max_length)
        if state["done"] >= 0:  # resumed: the next layer's inputs were committed; the arguments of any window do
            kwargs_list = source.layer_inputs(windows[0])[1]
            inputs = _load_inputs(work / "inputs.safetensors")
        else:
            firsts = [source.layer_inputs(w) for w in windows]
            inputs, kwargs_list = [h for h, _ in firsts], firsts[0][1]
        scale_dtype = _DTYPES.get(source.stored_dtype(source.checkpoint_key("model.embed_tokens.weight")),
                                  torch.bfloat16)  # the checkpoint's float dtype (an FP8 release's is bf16)
        for i in range(state["done"] + 1, n_layers):
            t0 = time.perf_counter()
            packed, rows, inputs = quantize_layer(source, i, inputs, kwargs_list[i], s, scale_dtype, progress)
            _write_layer(work / f"layer_{i:05d}.safetensors", packed)
            _commit_json(work / f"report_{i:05d}.json", {"rows": rows, "seconds": time.perf_counter() - t0})
            _save_inputs(work / "inputs.safetensors", inputs)
            state = {"key": run_key, "done": i}
            _commit_json(work / "state.json", state)
            if on_layer:
                on_layer(i)
        report = _assemble(source, src, out, work, s, n_layers)
    finally:
        source.close()
    shutil.rmtree(work)
    return report


def _fp8_block(qc: dict):
    """An FP8 release's weight_block_size (default 128 x 128), None for an unquantized checkpoint."""
    return tuple(qc.get("weight_block_size") or (128, 128)) if qc.get("quant_method") == "fp8" else None


def _check_groups(source, s: GpuQuantSettings) -> None:
    """Before any work: the group size divides the input dimension of every weight to quantize."""
    if not s.group_size:
        return
    for i, layer in enumerate(source.layers):
        prefix = f"model.layers.{i}."
        for n, m in layer.named_modules():
            key = source.checkpoint_key(prefix + n)
            if isinstance(m, torch.nn.Linear) and not _ignored(key, DEFAULT_IGNORE + s.ignore):
                _LayerQuantizer.check_group(key, m.in_features, s.group_size)
        if i in source.experts:
            experts = layer.get_submodule(source.experts[i][len(prefix):])
            for proj, K in ((0, experts.gate_up_proj.shape[2]), (2, experts.down_proj.shape[2])):
                _LayerQuantizer.check_group(source.expert_key(i, 0, proj)[:-len(".weight")], K, s.group_size)


def _write_layer(path: Path, packed: dict) -> None:
    from kt_kernel.checkpoint.safetensors_io import write_file

    write_file(path, {k: _np(v) for k, v in packed.items()}, {})


def _assemble(source, src: Path, out: Path, work: Path, s: GpuQuantSettings, n_layers: int) -> dict:
    """The output checkpoint from the source's tensors and the committed layer files."""
    from kt_kernel.checkpoint.safetensors_io import MappedFile, write_file

    layer_files = {i: MappedFile(work / f"layer_{i:05d}.safetensors") for i in range(n_layers)}
    try:
        quantized = {}  # output key -> (mapped file, entry)
        for f in layer_files.values():
            for k, t in f.header.tensors.items():
                quantized[k] = (f, t)
        bases = {k.rsplit(".", 1)[0] for k in quantized}
        plan = []  # (output key, dtype, shape, nbytes, read)
        for key in sorted(source.index.tensors):
            base = key[:-len(".weight")] if key.endswith(".weight") else None
            if key.endswith(".weight_scale_inv") and source.fp8_block is not None:
                continue  # an FP8 release's block scales: its weights are quantized or decoded here
            if base is not None and base not in bases and source.stored_dtype(key) == "F8_E4M3":
                t = source.index.tensors[key][1]
                decoded = lambda key=key: _np(source.stored(key).to(torch.bfloat16))[2]  # noqa: E731
                plan.append((key, "BF16", t["shape"], 2 * int(np.prod(t["shape"])), decoded))
                continue
            if base in bases:
                for part in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point"):
                    k = f"{base}.{part}"
                    if k in quantized:
                        f, t = quantized[k]
                        b, e = t["data_offsets"]
                        plan.append((k, t["dtype"], t["shape"], e - b, (lambda f=f, k=k: f.raw(k))))
            else:
                t = source.index.tensors[key][1]
                b, e = t["data_offsets"]
                plan.append((key, t["dtype"], t["shape"], e - b, (lambda key=key: _raw(source, key))))
        shards, cur, size = [], [], 0
        for item in plan:
            if cur and size + item[3] > s.max_shard_size:
                shards.append(cur)
                cur, size = [], 0
            cur.append(item)
            size += item[3]
        shards.append(cur)
        out.mkdir(parents=True, exist_ok=True)
        for f in out.glob("*.tmp"):  # a killed assembly's temporary files (the folder is this run's)
            f.unlink()
        names = (["model.safetensors"] if len(shards) == 1 else
                 [f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors" for j in range(len(shards))])
        weight_map, total = {}, 0
        for name, shard in zip(names, shards):
            total += write_file(out / name, {k: (dt, sh, n, rd) for k, dt, sh, n, rd in shard}, {"format": "pt"})
            weight_map.update({k: name for k, *_ in shard})
        if len(shards) > 1:
            _commit_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total},
                                                                "weight_map": weight_map})
        for f in sorted(src.iterdir()):
            if f.is_file() and f.suffix != ".safetensors" and f.name not in ("model.safetensors.index.json", "config.json"):
                shutil.copy(f, out / f.name)
        cfg = json.loads((src / "config.json").read_text())
        cfg["quantization_config"] = quantization_config(s)
        _commit_json(out / "config.json", cfg)
        rows, seconds = [], []
        for i in range(n_layers):
            r = json.loads((work / f"report_{i:05d}.json").read_text())
            rows += r["rows"]
            seconds.append(r["seconds"])
        report = {"settings": asdict(s), "source": str(src), "rows": rows, "seconds_per_layer": seconds}
        _commit_json(out / REPORT_NAME, report)
        return report
    finally:
        for f in layer_files.values():
            f.close()


def _raw(source, key: str):
    source.maps.array(key)  # opens the file's map
    return source.maps.maps[source.index.tensors[key][0]].raw(key)


def summary(report: dict) -> str:
    """Per kind of module: how many, and GPTQ's calibration-set output error over RTN's (their sums)."""
    kinds = {}
    for r in report["rows"]:
        k = kinds.setdefault(r["kind"], [0, 0.0, 0.0])
        k[0] += 1
        k[1] += r["error"]
        k[2] += r["rtn_error"]
    s = report["settings"]
    lines = [f"{s['quant_type']} {s['algorithm']} (group {s['group_size'] or 'per channel'}, "
             f"{'symmetric' if s['symmetric'] else 'asymmetric'}): {len(report['rows'])} weights in "
             f"{len(report['seconds_per_layer'])} layers, {sum(report['seconds_per_layer']):.1f} s"]
    for kind, (n, e, e_rtn) in sorted(kinds.items()):
        lines.append(f"  {kind}: {n} weights, output error {e / max(e_rtn, 1e-30):.3f} x round-to-nearest's")
    fallback = sum(1 for r in report["rows"] if r.get("fallback") and r["module"].endswith(("gate_proj", "w1")))
    if fallback:
        lines.append(f"  {fallback} routed experts got fewer than {s['min_expert_tokens']} calibration tokens and were "
                     "calibrated on all of their layer's tokens")
    lines.append(f"  report: {REPORT_NAME}")
    return "\n".join(lines)
