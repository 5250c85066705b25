"""cpu_save: keeping the layers that a wrapper quantizes at load, so later starts load them.

A wrapper with ``cpu_save`` that quantizes a layer (from an HF checkpoint or from tensors) writes
that layer, all of its logical experts, as a format-v1 layer file into the save folder, records
it in the folder's ``kt_kernel_meta.json`` and index, and then loads it from there like any
converted layer (so the result is bit-identical to ``load_weights_from_tensors``). Layers are
added one at a time, by as many wrappers and processes as there are: each file is written under a
temporary name and renamed, and the metadata is updated under an exclusive lock.

A save folder holds one conversion: one method, one geometry, one source. A folder whose
metadata disagrees raises, naming the field and both values, instead of mixing layers.
"""
from __future__ import annotations

import fcntl
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from kt_kernel.checkpoint import layout as L
from kt_kernel.checkpoint.converted import METHOD_FORMATS, read_meta
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.integrity import meta_digest
from kt_kernel.convert.convert import (folder_meta, layer_meta, quantize_layer_arrays, verify_layer_file, write_json,
                                       write_layer_file)
from kt_kernel.threads import torch_threads

__all__ = ["TENSORS_SOURCE", "saved_layer_ready", "save_layer"]

# The source fingerprint of layers saved from load_weights_from_tensors: tensors in memory have no
# identity to check, so such layers are rewritten at every load_weights_from_tensors.
TENSORS_SOURCE = "tensors"
_LOCK_FILE = ".kt_kernel_meta.lock"


# the fields that make two conversions the same one (besides the source's fingerprint)
_IDENTITY = ("kt_format", "method", "format", "group", "num_experts", "hidden_size", "intermediate_size")


def _want(method: str, E: int, H: int, I: int, source: dict) -> dict:
    """The record of a new save folder for this conversion."""
    return dict(folder_meta(method, E, H, I, None, [], dict(source), {}), written_by="cpu_save")


def _existing_meta(folder: Path) -> Optional[dict]:
    return read_meta(folder) if (folder / L.META_FILE).exists() else None


def _mismatch(meta: dict, want: dict) -> Optional[str]:
    fields = [(f, meta.get(f), want[f]) for f in _IDENTITY]
    fields.append(("source.fingerprint", meta.get("source", {}).get("fingerprint"), want["source"]["fingerprint"]))
    for field, got, value in fields:
        if got != value:
            return f"{field} is {got!r} there but {value!r} here"
    return None


def _check_folder(folder: Path, want: dict) -> None:
    """Raises unless ``folder`` is new, empty or a save folder of the same conversion."""
    if folder.exists() and not folder.is_dir():
        raise ConversionError(f"cpu_save folder {folder} is a file, not a folder")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("kt-"))
        if foreign:
            raise ConversionError(f"cpu_save folder {folder} holds {foreign[0]}, which kt_kernel did not write (an HF "
                                  "checkpoint?); give cpu_save a folder of its own")
    meta = _existing_meta(folder)
    if meta is not None:
        why = _mismatch(meta, want)
        if why:
            raise ConversionError(f"cpu_save folder {folder} holds another conversion: {why} (in {L.META_FILE}); "
                                  "give another folder or empty this one")


def saved_layer_ready(folder, layer: int, method: str, E: int, H: int, I: int, source: str) -> bool:
    """True when ``folder`` holds layer ``layer`` saved from ``source`` for this method and geometry
    (its file complete and its metadata matching); raises when the folder holds another
    conversion; False when the layer is not there yet."""
    folder = Path(folder)
    _check_folder(folder, _want(method, E, H, I, {"fingerprint": source}))
    meta = _existing_meta(folder)
    if meta is None or layer not in meta.get("moe_layers", []) or source == TENSORS_SOURCE:
        return False
    fmt = METHOD_FORMATS[method]
    spec = L.layer_arrays_spec(fmt["name"], fmt["group"], E, H, I)
    return verify_layer_file(folder / L.layer_file(layer), layer_meta(method, fmt, layer, E, H, I, source),
                             spec, layer) is None


@contextmanager
def _locked(folder: Path):
    with open(folder / _LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_layer(folder, layer: int, method: str, E: int, H: int, I: int, expert: Callable, source: dict,
               threads: int) -> Path:
    """Quantizes the E logical experts of ``layer`` (``expert(e, j)`` -> (fp32 [N, K], source
    bytes)) into ``folder`` and records the layer there. ``source`` is the metadata record of the
    source: at least {"fingerprint"}. Returns the layer file's path."""
    folder = Path(folder)
    want = _want(method, E, H, I, source)
    _check_folder(folder, want)
    folder.mkdir(parents=True, exist_ok=True)
    fmt = METHOD_FORMATS[method]
    with ThreadPoolExecutor(max(1, threads)) as pool, torch_threads(1):  # as the converter does
        tensors = quantize_layer_arrays(expert, layer, E, H, I, fmt, pool)
    path = folder / L.layer_file(layer)
    spec = L.layer_arrays_spec(fmt["name"], fmt["group"], E, H, I)
    with _locked(folder):
        _check_folder(folder, want)  # another process may have started the folder meanwhile
        entry = write_layer_file(path, tensors, layer_meta(method, fmt, layer, E, H, I, source["fingerprint"]), E)
        del tensors
        meta = _existing_meta(folder) or want
        meta["moe_layers"] = sorted(set(meta["moe_layers"]) | {layer})
        meta["files"][path.name] = entry
        index_file = folder / L.INDEX_FILE
        index = json.loads(index_file.read_text()) if index_file.exists() else {"metadata": {}, "weight_map": {}}
        index["weight_map"].update({L.key(layer, p, part): path.name for p, part in spec})
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        index["metadata"] = {"total_size": sum(f["bytes"] for f in meta["files"].values()),
                             "kt_format": L.FORMAT_VERSION}
        write_json(index_file, index)
        meta["meta_xxh3"] = meta_digest(meta)
        write_json(folder / L.META_FILE, meta)
    return path

