"""Loading one layer of a converted folder (or of an HF checkpoint, quantizing at load).

A converted layer file is memory-mapped; only the experts of CPU slots are read (their pages
are touched once, while packing), and the map is closed when the layer is packed, so peak RSS
while loading is the packed weights plus the mapped pages of the CPU experts' logical arrays,
which the kernel may drop at any time and which go when the map is closed. Before packing, the
bytes of those experts are checked against the checksums the converter recorded
(kt_kernel.convert.integrity), through one reused buffer.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kt_kernel.convert import layout as L
from kt_kernel.convert.safetensors_io import MappedFile, SafetensorsError, read_header
from kt_kernel.convert.convert import read_meta
from kt_kernel.convert.integrity import (VERIFY_ENV, file_xxh3, header_xxh3, sha256_file, verification_enabled,
                                        verify_experts)
from kt_kernel.convert.source import ConversionError, open_source
from kt_kernel.convert.save import save_layer, saved_layer_ready

__all__ = ["load_converted_layer", "load_hf_layer", "is_converted", "verify_folder"]


def is_converted(path) -> bool:
    """True for a folder written by the converter, finished or not (an unfinished one then fails
    to load, naming the missing metadata file)."""
    path = Path(path)
    return (path / L.META_FILE).exists() or any(path.glob("kt-experts-L*.safetensors*"))


def _check(field: str, got, want, where: str, source: str = "the converted weights") -> None:
    if got != want:
        raise ConversionError(f"{where}: {field} is {got!r} in {source} but {want!r} in this KTMoEWrapper")


def load_converted_layer(wrapper, path, pmap: torch.Tensor) -> None:
    """Checks the converted folder ``path`` against ``wrapper`` and loads its layer
    ``wrapper.layer_idx`` into the native layer; slot p takes logical expert pmap[p]."""
    path = Path(path)
    meta = read_meta(path)
    where = str(path / L.META_FILE)
    _check("kt_format (format version)", meta.get("kt_format"), L.FORMAT_VERSION, where)
    _check("method", meta.get("method"), wrapper.method, where)
    _check("hidden_size", meta.get("hidden_size"), wrapper.hidden_size, where)
    _check("intermediate_size (moe_intermediate_size)", meta.get("intermediate_size"),
           wrapper.moe_intermediate_size, where)
    layer = wrapper.layer_idx
    if layer not in meta.get("moe_layers", []):
        raise ConversionError(f"{where}: layer_idx {layer} is not among the converted MoE layers "
                              f"{meta.get('moe_layers')}")
    E = int(meta["num_experts"])
    if pmap is None:
        _check("num_experts", E, wrapper.num_experts, where + " (no physical_to_logical_map given)")
        pmap = torch.arange(E, dtype=torch.int64)
    file = path / L.layer_file(layer)
    if not file.exists():
        raise ConversionError(f"{path} lacks {file.name}, the experts of layer {layer}")
    try:
        header = read_header(file)
    except SafetensorsError as e:
        raise ConversionError(str(e)) from e
    fmt, group = meta["format"], meta["group"]
    want_header = {"kt_format": L.FORMAT_VERSION, "method": wrapper.method, "layer": layer, "format": fmt,
                   "group": group, "num_experts": E, "hidden_size": meta["hidden_size"],
                   "intermediate_size": meta["intermediate_size"], "source": meta["source"]["fingerprint"]}
    for k, want in want_header.items():
        if header.metadata.get(k) != str(want):
            raise ConversionError(f"{file}: its metadata {k}={header.metadata.get(k)!r}, expected {str(want)!r} "
                                  "(a file from another conversion or not a kt_kernel layer file)")
    spec = L.layer_arrays_spec(fmt, group, E, wrapper.hidden_size, wrapper.moe_intermediate_size)
    for (proj, part), (dtype, _, shape) in spec.items():
        t = header.tensors.get(L.key(layer, proj, part))
        if t is None:
            raise ConversionError(f"{file} has no tensor {L.key(layer, proj, part)}")
        if t["dtype"] != dtype or tuple(t["shape"]) != tuple(shape):
            raise ConversionError(f"{file}: {L.key(layer, proj, part)} is {t['dtype']} {tuple(t['shape'])}, "
                                  f"expected {dtype} {tuple(shape)}")
    if verification_enabled():
        cpu = ~wrapper.gpu_experts_mask
        read = {int(pmap[p]) for p in range(len(pmap)) if cpu[p] and 0 <= int(pmap[p]) < E}
        _verify(file, header, meta["files"].get(file.name, {}), [L.key(layer, p, part) for p, part in spec], read, E)
    mf = MappedFile(file, header)
    try:
        arrays = {(p, part): mf.array(L.key(layer, p, part)) for p, part in spec}
        parts = [a["part"] for a in L.format_record(fmt)["arrays"]]
        wrapper._layer.load_quantized([[arrays[(p, part)].ctypes.data for part in parts] for p in L.PROJ],
                                      pmap.data_ptr(), E, drop_pages=True)
        del arrays
    finally:
        mf.close()


def _verify(file: Path, header, entry: dict, keys: list, experts: set, E: int) -> None:
    """Checks what loading reads of ``file``: its header against the folder's record and the
    ``experts`` of each tensor against their checksums; a folder converted before per-expert
    checksums has only a sha256 of each whole file, verified instead."""
    fix = f"re-run the converter with --resume to rewrite it (or set {VERIFY_ENV}=0 to load it unverified)"
    if "header_xxh3" in entry:
        if header_xxh3(file) != entry["header_xxh3"]:
            raise ConversionError(f"{file}: its header does not match header_xxh3 in {L.META_FILE}: the file was "
                                  f"changed or damaged after conversion; {fix}")
        verify_experts(header, keys, experts, E)
    elif "sha256" in entry:
        if sha256_file(file) != entry["sha256"]:
            raise ConversionError(f"{file} does not match its sha256 in {L.META_FILE}: the file was changed or "
                                  f"damaged after conversion; {fix}")
    else:
        raise ConversionError(f"{L.META_FILE} records no checksum of {file.name}, so it cannot be verified; {fix}")


def verify_folder(path) -> None:
    """Checks every file of the converted folder ``path`` against its recorded checksums (every
    expert of every layer, the other files whole); raises ConversionError naming the first file
    that differs. Loading checks only what it reads; this is for copies and archives."""
    path = Path(path)
    meta = read_meta(path, verify=True)
    for name, entry in meta["files"].items():
        file = path / name
        try:
            header = read_header(file)
        except (SafetensorsError, FileNotFoundError) as e:
            raise ConversionError(str(e)) from e
        _verify(file, header, entry, list(header.tensors), set(range(meta["num_experts"])), meta["num_experts"])
    for name, entry in meta.get("other_files", {}).items():
        if not (path / name).is_file() or file_xxh3(path / name) != entry.get("xxh3"):
            raise ConversionError(f"{path / name} is missing or does not match its xxh3 in {L.META_FILE}: changed "
                                  "or damaged after conversion; re-run the converter with --resume to rewrite it")


def load_hf_layer(wrapper, path, pmap: torch.Tensor, save=None) -> None:
    """Reads layer ``wrapper.layer_idx`` of the HF checkpoint in ``path`` and quantizes it at load;
    only the logical experts that CPU slots use are read. With a ``save`` folder (cpu_save), the
    layer is loaded from there when it was saved from this checkpoint before; otherwise all its
    logical experts are quantized into it, and then loaded from it."""
    src = open_source(path)
    where = str(Path(path) / "config.json")
    _check("hidden_size", src.hidden_size, wrapper.hidden_size, where, "config.json")
    _check("intermediate_size (moe_intermediate_size)", src.intermediate_size, wrapper.moe_intermediate_size, where,
           "config.json")
    layer = wrapper.layer_idx
    if layer not in src.moe_layers:
        raise ConversionError(f"{path}: layer_idx {layer} is not an MoE layer (MoE layers: {src.moe_layers})")
    if pmap is None:
        _check("num_experts", src.num_experts, wrapper.num_experts, where + " (no physical_to_logical_map given)",
               "config.json")
        pmap = torch.arange(src.num_experts, dtype=torch.int64)
    cpu = ~wrapper.gpu_experts_mask
    bad = [(p, int(pmap[p])) for p in range(len(pmap)) if cpu[p] and not 0 <= int(pmap[p]) < src.num_experts]
    if bad:
        raise ValueError(f"physical_to_logical_map[{bad[0][0]}] = {bad[0][1]} is out of range: the checkpoint "
                         f"holds {src.num_experts} experts")
    if save is not None:
        E, H, I = src.num_experts, src.hidden_size, src.intermediate_size
        if not saved_layer_ready(save, layer, wrapper.method, E, H, I, src.fingerprint):
            save_layer(save, layer, wrapper.method, E, H, I,
                       lambda e, j: (src.expert(layer, e, j), H * I * src.bytes_per_weight()), src.record(),
                       wrapper.cpuinfer_threads)
        load_converted_layer(wrapper, save, pmap)
        return
    needed = sorted({int(pmap[p]) for p in range(len(pmap)) if cpu[p]})
    compact = {e: i for i, e in enumerate(needed)}
    n = max(len(needed), 1)
    H, I = src.hidden_size, src.intermediate_size
    gate, up, down = torch.zeros(n, I, H), torch.zeros(n, I, H), torch.zeros(n, H, I)
    for e, i in compact.items():
        for j, t in enumerate((gate, up, down)):
            t[i] = src.expert(layer, e, j)
    cmap = torch.tensor([compact.get(int(pmap[p]), 0) if cpu[p] else 0 for p in range(len(pmap))], dtype=torch.int64)
    wrapper._layer.load_from_tensors(gate.data_ptr(), up.data_ptr(), down.data_ptr(), "float32", cmap.data_ptr(), n)
