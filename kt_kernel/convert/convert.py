"""Converting a Hugging Face MoE checkpoint into kt_kernel's quantized format, layer by layer.

Memory: the converter holds one layer's output arrays plus, per worker thread, one expert
projection in fp32 and its quantized form, so its peak RSS is about one layer of output plus
``threads`` expert matrices (below one layer of source experts), whatever the model size.
Source tensors are read with pread, never mapped, so the source files' pages do not stay in RSS.

Atomicity and resume: every file is written as ``name.tmp`` and renamed when complete (a failed
write removes its ``.tmp``); the metadata file is written last. With ``resume=True`` a layer whose
file exists and verifies (header, keys, shapes, metadata naming the same source, method and layer,
every expert's checksum) is skipped. Files the converter did not write are never touched.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from kt_kernel import _ext
from kt_kernel.checkpoint import layout as L
from kt_kernel.checkpoint.converted import METHOD_FORMATS, read_meta
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.decoded import open_convert_source
from kt_kernel.checkpoint.hf import HFCheckpoint
from kt_kernel.checkpoint.integrity import (DIGEST_KEY, file_xxh3, header_xxh3, layer_digests, meta_digest,
                                           verify_experts)
from kt_kernel.checkpoint.safetensors_io import SafetensorsError, read_header, write_file
from kt_kernel.threads import torch_threads
from kt_kernel.timing import Stopwatch
from kt_kernel.formats import formats as method_formats

__all__ = ["convert_checkpoint", "verify_layer_file", "quantize_layer_arrays", "QUANT_METHODS"]

QUANT_METHODS = {f["quant_method"]: f["method"] for f in method_formats()}  # converter name -> method


class _Progress:
    """The converter's progress bar on stderr: tensors done, with the layers done and the source
    read rate beside it (tqdm gives the ETA)."""

    def __init__(self, layers: int, tensors: int, enabled: bool):
        # a log (not a terminal) gets a line every 30 s instead of a redrawn bar
        self.bar = tqdm(total=tensors, desc="[kt convert]", unit="tensor", file=sys.stderr, disable=not enabled,
                        mininterval=0.25 if sys.stderr.isatty() else 30.0)
        self.layers, self.done_layers, self.bytes, self.clock = layers, 0, 0, Stopwatch()

    def update(self, layers=0, tensors=0, nbytes=0):
        self.done_layers += layers
        self.bytes += nbytes
        self.bar.set_postfix_str(f"layers {self.done_layers}/{self.layers}  "
                                 f"{self.bytes / max(self.clock.seconds, 1e-9) / 1e9:.2f} GB/s", refresh=False)
        self.bar.update(tensors)

    def close(self):
        self.bar.close()


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


def verify_layer_file(path: Path, want_meta: dict, spec: dict, layer: int) -> Optional[str]:
    """None when ``path`` is a complete layer file with ``want_meta`` whose every expert matches
    its checksum; else why not (a file written before checksums never verifies)."""
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
    if DIGEST_KEY not in h.metadata:
        return f"{path.name} was written before per-expert checksums"
    try:
        verify_experts(h, [L.key(layer, p, part) for p, part in spec], None, int(want_meta["num_experts"]))
    except ConversionError as e:
        return str(e)
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
        for a in fmt["arrays"]:
            out[(proj, a["part"])][e] = L.to_file_array(q[a["name"]], a["file_bits"])
        return nbytes

    for nbytes in pool.map(one, [(e, j) for e in range(E) for j in range(3)]):
        done(nbytes)
    return {L.key(layer, proj, part): (spec[(proj, part)][0], spec[(proj, part)][2], a)
            for (proj, part), a in out.items()}


def _quantize_layer(src: HFCheckpoint, layer: int, fmt: dict, pool: ThreadPoolExecutor, progress: _Progress) -> dict:
    def expert(e, j):
        w = src.expert(layer, e, j)
        return w, w.numel() * src.bytes_per_weight()

    tensors = quantize_layer_arrays(expert, layer, src.num_experts, src.hidden_size, src.intermediate_size, fmt, pool,
                                    lambda nbytes: progress.update(tensors=1, nbytes=nbytes))
    biases = src.layer_biases(layer) if hasattr(src, "layer_biases") else None
    if biases is not None:  # gpt-oss's expert biases, fp32 [E, N], beside the weights (L.BIAS_PART)
        for proj, b in zip(L.PROJ, biases):
            b = np.ascontiguousarray(np.asarray(b, dtype=np.float32))
            tensors[L.key(layer, proj, L.BIAS_PART)] = ("F32", list(b.shape), b)
    return tensors


def _copy_nonexpert(src: HFCheckpoint, out: Path, shard_bytes: int) -> dict:
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


# the fields that make two conversions the same one (besides the source's fingerprint)
IDENTITY = ("method", "format", "group", "num_experts", "hidden_size", "intermediate_size")


def converter_file(name: str) -> bool:
    """True for the names the converter writes itself; any other file in an output folder is the
    user's (or a copy of an input file, recorded in the metadata's ``copied``)."""
    return name in (L.META_FILE, L.INDEX_FILE) or (name.startswith("kt-") and name.endswith(".safetensors"))


def _previous_conversion(out: Path) -> Optional[dict]:
    """What the conversion already in ``out`` was (identity fields, source fingerprint, copied
    files): its metadata, or, when the converter stopped before writing that, the metadata of its
    first readable layer file; None for a folder holding neither."""
    if (out / L.META_FILE).exists():
        meta = read_meta(out)
        return dict({f: meta[f] for f in IDENTITY}, fingerprint=meta["source"]["fingerprint"],
                    path=meta["source"].get("path"), copied=meta.get("copied", []), where=str(out / L.META_FILE))
    for f in sorted(out.glob("kt-experts-L*.safetensors")):
        try:
            h = read_header(f)
        except SafetensorsError:
            continue
        return dict({k: h.metadata.get(k) for k in IDENTITY}, fingerprint=h.metadata.get("source"), path=None,
                    copied=[], where=str(f))
    return None


def _check_output(out: Path, src: HFCheckpoint, want: dict, resume: bool, overwrite: bool) -> set:
    """Refuses an output folder the conversion must not write into; returns the names of input files
    that earlier runs copied there (which this run may replace)."""
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--output {out} is a file, not a folder; give a new or empty folder")
    inp, o = src.path.resolve(), out.resolve()
    if o == inp or inp in o.parents:
        raise ConversionError(f"--output {out} is {'the input folder' if o == inp else 'inside the input folder'} "
                              f"{src.path}; give a folder outside the checkpoint")
    if not out.is_dir() or not any(out.iterdir()):
        return set()
    if not (resume or overwrite):
        raise ConversionError(f"{out} exists and is not empty; pass --resume to continue a conversion there, "
                              "--overwrite to replace the conversion there, or give an empty or new folder")
    try:
        prev = _previous_conversion(out)
    except ConversionError:
        if not overwrite:
            raise
        prev = None
    if prev is None:
        return set()
    if not overwrite:
        # the path too: a fine-tune has the same config and tensor headers, so the same fingerprint
        here = src.record()["path"]
        fields = [(f, prev[f], want[f]) for f in IDENTITY] + [
            ("source.fingerprint", prev["fingerprint"], want["source"]), ("source.path", prev["path"] or here, here)]
        for field, got, value in fields:
            if str(got) != str(value):
                raise ConversionError(f"{out} holds another conversion: {field} is {got!r} in {prev['where']} but "
                                      f"{str(value)!r} in this one (input {src.path}); pass --overwrite to replace "
                                      "it, or give another folder")
    return set(prev["copied"])


def _copies(src: HFCheckpoint) -> list:
    """The input files copied beside the converted weights: config.json, tokenizer and generation files."""
    return sorted(f for f in src.path.iterdir()
                  if f.is_file() and not f.name.endswith(".safetensors") and f.name != L.INDEX_FILE)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and file_xxh3(a) == file_xxh3(b)


def _copy_file(f: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        shutil.copyfile(f, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_layer_file(path: Path, tensors: dict, meta: dict, num_experts: int) -> dict:
    """Writes a layer file with its per-expert checksums; returns its kt_kernel_meta.json ``files`` entry."""
    write_file(path, tensors, dict(meta, **{DIGEST_KEY: layer_digests(tensors, num_experts)}))
    return {"layer": meta["layer"], "bytes": path.stat().st_size, "header_xxh3": header_xxh3(path)}


def convert_checkpoint(input_path, output_path, quant_method: str = "int4", *, input_type: Optional[str] = None,
                       threads: Optional[int] = None, resume: bool = False, overwrite: bool = False,
                       progress: bool = True, layers: Optional[list] = None, shard_bytes: int = 4 << 30) -> dict:
    """Converts the HF checkpoint in ``input_path`` into ``output_path``; returns the metadata
    record. ``quant_method``: a format's converter name (QUANT_METHODS: int4 for AMXINT4, ...) or a
    KTMoEWrapper method name. ``resume``: keep the layers already there that verify (checksums
    included) and rewrite the others. ``overwrite``: convert into a folder that holds another
    conversion (method, geometry or source), replacing its files; without it that raises.
    Files in the output folder that the converter did not write are never deleted or replaced.
    ``layers``: convert only these MoE layers (for tests and tools; the metadata then lists only
    them). ``shard_bytes``: the largest file of non-expert tensors."""
    method = QUANT_METHODS.get(quant_method, quant_method)
    if method not in METHOD_FORMATS:
        raise ConversionError(f"unknown quant method {quant_method!r}; valid: {', '.join(QUANT_METHODS)}")
    fmt = METHOD_FORMATS[method]
    src = open_convert_source(input_path, input_type)
    out = Path(output_path)
    E, H, I = src.num_experts, src.hidden_size, src.intermediate_size
    copied_before = _check_output(out, src, layer_meta(method, fmt, 0, E, H, I, src.fingerprint), resume, overwrite)
    copies = _copies(src)
    for f in copies:
        dest = out / f.name
        if dest.exists() and f.name not in copied_before and not (dest.is_file() and _same_bytes(f, dest)):
            raise ConversionError(f"{dest} exists and the converter did not write it; it would be replaced by "
                                  f"{f}: move it away, or give another folder")
    try:
        return _convert(src, out, method, fmt, copies, threads, resume, progress, layers, shard_bytes)
    except OSError as e:
        o, f = out.resolve(), Path(e.filename or out).resolve()
        if not (f == o or o in f.parents or f in o.parents):  # not the output folder, a file in it or its parents
            raise ConversionError(f"cannot read {e.filename}: {e.strerror or e}") from e
        # ENOSPC, EROFS, EACCES...: every write is to name.tmp, removed on failure, so what is left
        # is complete files, which --resume keeps
        raise ConversionError(f"cannot write the converted weights into {out}: {e.strerror or e} "
                              f"({e.filename or out}); free space or fix permissions there, then rerun with "
                              "--resume") from e


def _convert(src: HFCheckpoint, out: Path, method: str, fmt: dict, copies: list, threads, resume: bool, progress: bool,
             layers, shard_bytes: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / L.META_FILE).unlink(missing_ok=True)  # the folder is incomplete until the meta is rewritten
    ours = {f.name for f in copies}
    for stale in out.glob("*.tmp"):  # left by a killed run; only the names this converter writes
        if converter_file(stale.name[:-4]) or stale.name[:-4] in ours:
            stale.unlink()

    todo = src.moe_layers if layers is None else [l for l in src.moe_layers if l in set(layers)]
    E, H, I = src.num_experts, src.hidden_size, src.intermediate_size
    bar = _Progress(len(todo), len(todo) * E * 3, progress)
    threads = threads or len(os.sched_getaffinity(0))
    weight_map, files, clock, converted = {}, {}, Stopwatch(), 0
    try:
        # torch's own threads off while our pool runs many small torch calls on every core: they
        # spin between calls and took the cores from the quantizer (1 thread ran 4-10x slower)
        with ThreadPoolExecutor(threads) as pool, torch_threads(1):
            for layer in todo:
                spec = L.layer_arrays_spec(fmt["name"], fmt["group"], E, H, I)
                meta = layer_meta(method, fmt, layer, E, H, I, src.fingerprint)
                path = out / L.layer_file(layer)
                if resume and verify_layer_file(path, meta, spec, layer) is None:
                    bar.update(tensors=E * 3)
                    files[path.name] = {"layer": layer, "bytes": path.stat().st_size,
                                        "header_xxh3": header_xxh3(path)}
                else:
                    tensors = _quantize_layer(src, layer, fmt, pool, bar)
                    files[path.name] = write_layer_file(path, tensors, meta, E)
                    del tensors
                    converted += src.layer_bytes(layer)
                bar.update(layers=1)
                weight_map.update({L.key(layer, p, part): path.name for p, part in spec})
        weight_map.update(_copy_nonexpert(src, out, shard_bytes))
    finally:
        bar.close()
    seconds = clock.seconds
    for f in copies:
        _copy_file(f, out / f.name)
    total = sum((out / f).stat().st_size for f in set(weight_map.values()))
    write_json(out / L.INDEX_FILE, {"metadata": {"total_size": total, "kt_format": L.FORMAT_VERSION},
                                    "weight_map": dict(sorted(weight_map.items()))})
    others = sorted(set(weight_map.values()) - set(files)) + [L.INDEX_FILE] + [f.name for f in copies]
    record = folder_meta(method, E, H, I, src.num_layers, todo, src.record(), dict(sorted(files.items())))
    record["other_files"] = {name: {"bytes": (out / name).stat().st_size, "xxh3": file_xxh3(out / name)}
                             for name in others}
    record["copied"] = [f.name for f in copies]
    record["meta_xxh3"] = meta_digest(record)
    write_json(out / L.META_FILE, record)
    record["_stats"] = {"seconds": seconds, "source_bytes_converted": converted}
    return record


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a partial file left behind (ENOSPC, EROFS)
        raise
