"""Converting a Hugging Face MoE checkpoint into kt_kernel's quantized format, layer by layer.

Memory: the converter holds one layer's output arrays plus, per worker thread, one expert
projection in fp32 and its quantized form, so its peak RSS is about one layer of output plus
``threads`` expert matrices (below one layer of source experts), whatever the model size.
Source tensors are read with pread, never mapped, so the source files' pages do not stay in RSS.

Atomicity and resume: every file is written as ``name.tmp`` and renamed when complete; the
metadata file is written last. With ``resume=True`` a layer whose file exists and verifies
(header, keys, shapes, metadata naming the same source, method and layer) is skipped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from kt_kernel import _ext
from kt_kernel.cpu import torch_threads
from kt_kernel.convert import layout as L
from kt_kernel.convert.safetensors_io import SafetensorsError, read_header, write_file
from kt_kernel.convert.source import ConversionError, Source, open_source

__all__ = ["convert_checkpoint", "verify_layer_file", "quantize_layer_arrays", "METHOD_FORMATS"]

METHOD_FORMATS = {f["method"]: f for f in _ext.formats()}
QUANT_METHODS = {"int4": "AMXINT4", "int8": "AMXINT8", "bf16": "BF16"}


class _Progress:
    """One status line on stderr: layers, tensors, throughput, ETA."""

    def __init__(self, layers: int, tensors: int, enabled: bool):
        self.layers, self.tensors, self.enabled = layers, tensors, enabled
        self.done_layers = self.done_tensors = self.bytes = 0
        self.t0 = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, layers=0, tensors=0, nbytes=0):
        self.done_layers += layers
        self.done_tensors += tensors
        self.bytes += nbytes
        now = time.monotonic()
        # a terminal gets one line redrawn at most 4 times a second; a log, one line per layer
        if not self.enabled or (self.tty and now - self.shown < 0.25 and self.done_layers < self.layers) \
                or (not self.tty and not layers):
            return
        self.shown = now
        dt = max(now - self.t0, 1e-9)
        frac = self.done_tensors / max(self.tensors, 1)
        eta = dt / frac - dt if frac > 0 else float("nan")
        sys.stderr.write(f"{chr(13) if self.tty else ''}[kt convert] layers {self.done_layers}/{self.layers}  tensors "
                         f"{self.done_tensors}/{self.tensors}  {self.bytes / dt / 1e9:.2f} GB/s  ETA {eta:5.0f} s "
                         + ("" if self.tty else "\n"))
        sys.stderr.flush()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def layer_meta(method: str, fmt: dict, layer: int, E: int, H: int, I: int, source: str) -> dict:
    """The ``__metadata__`` of a layer file."""
    return {"kt_format": L.FORMAT_VERSION, "method": method, "format": fmt["name"], "group": fmt["group"],
            "layer": layer, "num_experts": E, "hidden_size": H, "intermediate_size": I, "source": source}


def folder_meta(method: str, E: int, H: int, I: int, num_layers, moe_layers: list, source: dict,
                files: dict) -> dict:
    """The kt_kernel_meta.json record of a converted folder."""
    fmt = METHOD_FORMATS[method]
    return {"kt_format": L.FORMAT_VERSION, "method": method, "format": fmt["name"], "group": fmt["group"],
            "num_experts": E, "hidden_size": H, "intermediate_size": I, "num_hidden_layers": num_layers,
            "moe_layers": moe_layers, "source": source, "files": files}


def read_meta(path) -> dict:
    """The kt_kernel_meta.json record of the converted folder ``path``."""
    path = Path(path)
    f = path / L.META_FILE
    if not f.exists():
        raise ConversionError(f"{path} has no {L.META_FILE}: not a kt_kernel converted folder (or its conversion "
                              "did not finish; rerun convert_cpu_weights.py with --resume)")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise ConversionError(f"{f} is not valid JSON: {e}") from e


def verify_layer_file(path: Path, want_meta: dict, spec: dict, layer: int) -> Optional[str]:
    """None when ``path`` is a complete layer file with ``want_meta``; else why not."""
    try:
        h = read_header(path)
    except (SafetensorsError, FileNotFoundError) as e:
        return str(e)
    for k, v in want_meta.items():
        if h.metadata.get(k) != str(v):
            return f"{path.name}: metadata {k}={h.metadata.get(k)!r}, expected {str(v)!r}"
    for (proj, part), (dtype, _, shape) in spec.items():
        t = h.tensors.get(L.key(layer, proj, part))
        if t is None:
            return f"{path.name} has no {L.key(layer, proj, part)}"
        if t["dtype"] != dtype or tuple(t["shape"]) != tuple(shape):
            return (f"{path.name}: {L.key(layer, proj, part)} is {t['dtype']} {tuple(t['shape'])}, "
                    f"expected {dtype} {tuple(shape)}")
    return None


def quantize_layer_arrays(expert, layer: int, E: int, H: int, I: int, fmt: dict, pool: ThreadPoolExecutor,
                          done=lambda nbytes: None) -> dict:
    """The format-v1 arrays of one layer: ``expert(e, j)`` gives projection j (0 gate, 1 up,
    2 down) of logical expert e as fp32 [N, K] and the bytes it took in its source; ``done(nbytes)``
    is called as each projection is stored. Returns key -> (safetensors dtype, shape, array)."""
    spec = L.layer_arrays_spec(fmt["name"], fmt["group"], E, H, I)
    out = {k: np.empty(shape, dtype=npt) for k, (_, npt, shape) in spec.items()}

    def one(task):
        e, j = task
        proj = L.PROJ[j]
        w, nbytes = expert(e, j)
        # the sum is NaN or Inf when any weight is (a cheap pass); only then look closer, since
        # large finite weights can also overflow it
        if not math.isfinite(float(w.sum())) and not torch.isfinite(w).all():
            bad = (~torch.isfinite(w)).nonzero()[0].tolist()
            raise ConversionError(f"layer {layer} expert {e} {proj}: NaN or Inf at {bad}")
        q = _ext.quantize(fmt["name"], w.numpy())
        if fmt["name"] == "int4_g32":
            out[(proj, "qweight")][e] = L.pack_nibbles(q["values"])
            out[(proj, "scale")][e] = q["group_scale"]
            out[(proj, "min")][e] = q["group_min"]
        else:
            out[(proj, "qweight")][e] = q["values"]
            if "scale" in q:
                out[(proj, "scale")][e] = q["scale"]
        return nbytes

    for nbytes in pool.map(one, [(e, j) for e in range(E) for j in range(3)]):
        done(nbytes)
    return {L.key(layer, proj, part): (spec[(proj, part)][0], spec[(proj, part)][2], a)
            for (proj, part), a in out.items()}


def _quantize_layer(src: Source, layer: int, fmt: dict, pool: ThreadPoolExecutor, progress: _Progress) -> dict:
    def expert(e, j):
        w = src.expert(layer, e, j)
        return w, w.numel() * src.bytes_per_weight()

    return quantize_layer_arrays(expert, layer, src.num_experts, src.hidden_size, src.intermediate_size, fmt, pool,
                                 lambda nbytes: progress.update(tensors=1, nbytes=nbytes))


def _copy_nonexpert(src: Source, out: Path, shard_bytes: int) -> dict:
    """Copies every non-expert tensor unchanged into files of at most ``shard_bytes`` (a larger
    tensor gets a file of its own), streamed one tensor at a time. Returns key -> file name."""
    keys = sorted(src.non_expert_keys(), key=lambda k: (src.tensors[k][0], k))
    files, size = [[]], 0
    for k in keys:
        b, e = src.tensors[k][1]["data_offsets"]
        if files[-1] and size + (e - b) > shard_bytes:
            files.append([])
            size = 0
        files[-1].append(k)
        size += e - b
    weight_map = {}
    for i, ks in enumerate(f for f in files if f):
        name = L.nonexpert_file(i)
        tensors = {}
        for k in ks:
            t = src.tensors[k][1]
            b, e = t["data_offsets"]
            tensors[k] = (t["dtype"], t["shape"], e - b,
                          lambda k=k: src.read(k).reshape(-1).view(torch.uint8).numpy())
        write_file(out / name, tensors, {"kt_format": L.FORMAT_VERSION, "source": src.fingerprint})
        weight_map.update({k: name for k in ks})
    return weight_map


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_checkpoint(input_path, output_path, quant_method: str = "int4", *, input_type: Optional[str] = None,
                       threads: Optional[int] = None, resume: bool = False, progress: bool = True,
                       layers: Optional[list] = None, shard_bytes: int = 4 << 30) -> dict:
    """Converts the HF checkpoint in ``input_path`` into ``output_path``; returns the metadata
    record. ``quant_method``: int4 (AMXINT4, int4_g32), int8 (AMXINT8) or bf16, or a
    KTMoEWrapper method name. ``layers``: convert only these MoE layers (for tests and tools;
    the metadata then lists only them). ``shard_bytes``: the largest file of non-expert tensors."""
    method = QUANT_METHODS.get(quant_method, quant_method)
    if method not in METHOD_FORMATS:
        raise ConversionError(f"unknown quant method {quant_method!r}; valid: {', '.join(QUANT_METHODS)}")
    fmt = METHOD_FORMATS[method]
    src = open_source(input_path, input_type)
    out = Path(output_path)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConversionError(f"{out} exists and is not empty; pass --resume to continue a conversion there, "
                              "or give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / L.META_FILE).unlink(missing_ok=True)  # the folder is incomplete until the meta is rewritten
    for stale in out.glob("*.tmp"):
        stale.unlink()

    todo = src.moe_layers if layers is None else [l for l in src.moe_layers if l in set(layers)]
    E, H, I = src.num_experts, src.hidden_size, src.intermediate_size
    bar = _Progress(len(todo), len(todo) * E * 3, progress)
    threads = threads or len(os.sched_getaffinity(0))
    weight_map, files, t0, converted = {}, {}, time.monotonic(), 0
    try:
        # torch's own threads off while our pool runs many small torch calls on every core: they
        # spin between calls and took the cores from the quantizer (1 thread ran 4-10x slower)
        with ThreadPoolExecutor(threads) as pool, torch_threads(1):
            for layer in todo:
                spec = L.layer_arrays_spec(fmt["name"], fmt["group"], E, H, I)
                meta = layer_meta(method, fmt, layer, E, H, I, src.fingerprint)
                path = out / L.layer_file(layer)
                if not (resume and verify_layer_file(path, meta, spec, layer) is None):
                    tensors = _quantize_layer(src, layer, fmt, pool, bar)
                    write_file(path, tensors, meta)
                    del tensors
                    converted += src.layer_bytes(layer)
                else:
                    bar.update(tensors=E * 3)
                bar.update(layers=1)
                weight_map.update({L.key(layer, p, part): path.name for p, part in spec})
                files[path.name] = {"layer": layer, "bytes": path.stat().st_size}
        weight_map.update(_copy_nonexpert(src, out, shard_bytes))
    finally:
        bar.close()
    seconds = time.monotonic() - t0
    for f in out.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != L.META_FILE:
            f.unlink()  # left from an older run; replaced below
    for f in Path(input_path).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != L.INDEX_FILE:
            shutil.copyfile(f, out / f.name)  # config.json, tokenizer files, generation config
    total = sum((out / f).stat().st_size for f in set(weight_map.values()))
    write_json(out / L.INDEX_FILE, {"metadata": {"total_size": total, "kt_format": L.FORMAT_VERSION},
                                    "weight_map": dict(sorted(weight_map.items()))})
    record = folder_meta(method, E, H, I, src.num_layers, todo, src.record(),
                         {name: dict(v, sha256=sha256_file(out / name)) for name, v in sorted(files.items())})
    write_json(out / L.META_FILE, record)
    record["_stats"] = {"seconds": seconds, "source_bytes_converted": converted}
    return record


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
