"""The converted-folder reader: a folder written by the converter (or by cpu_save), its experts
stored in a method's format as the logical arrays of kt_kernel.checkpoint.layout.

A layer file is memory-mapped; only the experts of CPU slots are read (their pages are touched
once, while packing), and the map is closed when the layer is packed, so peak RSS while loading
is the packed weights plus the mapped pages of the CPU experts' logical arrays, which the kernel
may drop at any time and which go when the map is closed. Before packing, the bytes of those
experts are checked against the checksums the converter recorded
(kt_kernel.checkpoint.integrity), through one reused buffer.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from kt_kernel.checkpoint import layout as L
from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.checkpoint.integrity import (VERIFY_ENV, file_xxh3, header_xxh3, meta_digest, sha256_file,
                                           verification_enabled, verify_experts)
from kt_kernel.checkpoint.safetensors_io import MappedFile, SafetensorsError, read_header
from kt_kernel.formats import formats as method_formats

__all__ = ["ConvertedCheckpoint", "METHOD_FORMATS", "is_converted", "read_meta", "check_meta", "verify_folder"]

METHOD_FORMATS = {f["method"]: f for f in method_formats()}


def is_converted(path) -> bool:
    """True for a folder written by the converter, finished or not (an unfinished one then fails
    to load, naming the missing metadata file)."""
    path = Path(path)
    return (path / L.META_FILE).exists() or any(path.glob("kt-experts-L*.safetensors*"))


# the metadata cannot say which conversion the folder holds, so --resume alone refuses it
_REWRITE_META = ("re-run the converter with --resume --overwrite to rewrite it (the layer files that verify are "
                 "kept)")


def read_meta(path, verify: Optional[bool] = None) -> dict:
    """The kt_kernel_meta.json record of the converted folder ``path``, its fields checked (and its
    own checksum, unless ``verify`` is False or KT_KERNEL_VERIFY_WEIGHTS=0)."""
    path = Path(path)
    f = path / L.META_FILE
    if not f.exists():
        raise ConversionError(f"{path} has no {L.META_FILE}: not a kt_kernel converted folder (or its conversion "
                              "did not finish; rerun convert_cpu_weights.py with --resume)")
    try:
        record = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{f} is not valid JSON: {e}") from e
    check_meta(record, f)
    if (verification_enabled() if verify is None else verify) and "meta_xxh3" in record \
            and record["meta_xxh3"] != meta_digest(record):
        raise ConversionError(f"{f} does not match its checksum meta_xxh3: the file was changed or damaged after "
                              f"conversion; {_REWRITE_META} (or set {VERIFY_ENV}=0)")
    return record


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_meta(record, file: Path) -> None:
    """Raises ConversionError naming the field and ``file`` when a kt_kernel_meta.json record is
    malformed: a field missing, of the wrong type or out of range, or an unknown method."""
    def bad(field, why):
        raise ConversionError(f"{file}: field {field} {why} (a damaged or hand-edited {L.META_FILE}; "
                              f"{_REWRITE_META})")

    if not isinstance(record, dict):
        bad("(top level)", f"is a {type(record).__name__}, expected a JSON object")
    for field in ("kt_format", "method", "format", "group", "num_experts", "hidden_size", "intermediate_size",
                  "moe_layers", "source", "files"):
        if field not in record:
            bad(field, "is missing")
    if record["kt_format"] != L.FORMAT_VERSION or not _is_int(record["kt_format"]):
        bad("kt_format", f"is {record['kt_format']!r}; this kt_kernel reads format version {L.FORMAT_VERSION}")
    method = record["method"]
    if not isinstance(method, str) or method not in METHOD_FORMATS:
        bad("method", f"is {method!r}; valid: {', '.join(METHOD_FORMATS)}")
    fmt = METHOD_FORMATS[method]
    if record["format"] != fmt["name"]:
        bad("format", f"is {record['format']!r}, but method {method} stores {fmt['name']!r}")
    if not _is_int(record["group"]) or record["group"] != fmt["group"]:
        bad("group", f"is {record['group']!r}, but format {fmt['name']} has group {fmt['group']}")
    for field in ("num_experts", "hidden_size", "intermediate_size"):
        if not _is_int(record[field]) or not 0 < record[field] < 2 ** 31:
            bad(field, f"is {record[field]!r}, expected a positive integer")
    n = record.get("num_hidden_layers")
    if n is not None and (not _is_int(n) or n <= 0):
        bad("num_hidden_layers", f"is {n!r}, expected a positive integer or null")
    layers = record["moe_layers"]
    if not isinstance(layers, list) or not all(_is_int(x) and 0 <= x < 2 ** 31 for x in layers):
        bad("moe_layers", f"is {layers!r}, expected a list of layer indices (non-negative integers)")
    src = record["source"]
    if not isinstance(src, dict) or not isinstance(src.get("fingerprint"), str):
        bad("source", f"is {src!r}, expected an object with a string fingerprint")
    files = record["files"]
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        bad("files", "is not an object of per-file records")
    for name, v in files.items():
        for field in ("layer", "bytes"):
            if not _is_int(v.get(field)) or v[field] < 0:
                bad(f"files.{name}.{field}", f"is {v.get(field)!r}, expected a non-negative integer")
        for field in ("header_xxh3", "xxh3", "sha256"):
            if field in v and not isinstance(v[field], str):
                bad(f"files.{name}.{field}", f"is {v[field]!r}, expected a hex string")
    others = record.get("other_files", {})
    if not isinstance(others, dict) or not all(isinstance(v, dict) and isinstance(v.get("xxh3"), str)
                                               for v in others.values()):
        bad("other_files", "is not an object of per-file records with an xxh3 string")
    if "copied" in record and (not isinstance(record["copied"], list)
                               or not all(isinstance(x, str) for x in record["copied"])):
        bad("copied", f"is {record['copied']!r}, expected a list of file names")
    if "meta_xxh3" in record and not isinstance(record["meta_xxh3"], str):
        bad("meta_xxh3", f"is {record['meta_xxh3']!r}, expected a hex string")


def _check(field: str, got, want, where: str) -> None:
    if got != want:
        raise ConversionError(f"{where}: {field} is {got!r} in the converted weights but {want!r} in this KTMoEWrapper")


class ConvertedCheckpoint:
    """A converted folder's experts, stored in the format of ``stored_method``: the packer takes
    their logical arrays as they are (``layer_arrays``)."""
    kind = "converted"

    def __init__(self, path):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.stored_method = self.meta["method"]
        self.num_experts = int(self.meta["num_experts"])
        self.hidden_size, self.intermediate_size = self.meta["hidden_size"], self.meta["intermediate_size"]
        self.moe_layers = self.meta["moe_layers"]
        self.fingerprint = self.meta["source"]["fingerprint"]

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None) -> None:
        """Raises ConversionError unless the folder holds ``layer`` in ``method``'s format with this
        geometry (and ``num_experts`` experts, when given: the identity map of a load without one)."""
        meta, where = self.meta, str(self.path / L.META_FILE)
        _check("kt_format (format version)", meta.get("kt_format"), L.FORMAT_VERSION, where)
        _check("method", meta.get("method"), method, where)
        _check("hidden_size", meta.get("hidden_size"), hidden_size, where)
        _check("intermediate_size (moe_intermediate_size)", meta.get("intermediate_size"), intermediate_size, where)
        if layer not in meta.get("moe_layers", []):
            raise ConversionError(f"{where}: layer_idx {layer} is not among the converted MoE layers "
                                  f"{meta.get('moe_layers')}")
        if num_experts is not None:
            _check("num_experts", self.num_experts, num_experts, where + " (no physical_to_logical_map given)")

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, part) -> the [E, ...] array of ``layer``, zero-copy views of the mapped layer
        file, valid inside the block; the bytes of ``experts`` (the logical experts that will be
        read) are verified first, unless verification is off."""
        path, meta = self.path, self.meta
        E = self.num_experts
        file = path / L.layer_file(layer)
        if not file.exists():
            raise ConversionError(f"{path} lacks {file.name}, the experts of layer {layer}")
        try:
            header = read_header(file)
        except SafetensorsError as e:
            raise ConversionError(str(e)) from e
        fmt, group = meta["format"], meta["group"]
        want_header = {"kt_format": L.FORMAT_VERSION, "method": self.stored_method, "layer": layer, "format": fmt,
                       "group": group, "num_experts": E, "hidden_size": meta["hidden_size"],
                       "intermediate_size": meta["intermediate_size"], "source": meta["source"]["fingerprint"]}
        for k, want in want_header.items():
            if header.metadata.get(k) != str(want):
                raise ConversionError(f"{file}: its metadata {k}={header.metadata.get(k)!r}, expected {str(want)!r} "
                                      "(a file from another conversion or not a kt_kernel layer file)")
        spec = L.layer_arrays_spec(fmt, group, E, self.hidden_size, self.intermediate_size)
        for (proj, part), (dtype, _, shape) in spec.items():
            t = header.tensors.get(L.key(layer, proj, part))
            if t is None:
                raise ConversionError(f"{file} has no tensor {L.key(layer, proj, part)}")
            if t["dtype"] != dtype or tuple(t["shape"]) != tuple(shape):
                raise ConversionError(f"{file}: {L.key(layer, proj, part)} is {t['dtype']} {tuple(t['shape'])}, "
                                      f"expected {dtype} {tuple(shape)}")
        if verification_enabled():
            _verify(file, header, meta["files"].get(file.name, {}), [L.key(layer, p, part) for p, part in spec],
                    experts, E)
        mf = MappedFile(file, header)
        try:
            arrays: dict[tuple, np.ndarray] = {(p, part): mf.array(L.key(layer, p, part)) for p, part in spec}
            yield arrays
            arrays.clear()  # the map closes below only once no view of it is left
        finally:
            mf.close()


    def layer_biases(self, layer: int):
        """fp32 (gate [E, I], up [E, I], down [E, H]) expert biases of ``layer`` where the converter
        stored them (a gpt-oss source), verified; None where the layer has none."""
        file = self.path / L.layer_file(layer)
        try:
            header = read_header(file)
        except (SafetensorsError, FileNotFoundError) as e:
            raise ConversionError(str(e)) from e
        keys = [L.key(layer, p, L.BIAS_PART) for p in L.PROJ]
        present = [k in header.tensors for k in keys]
        if not any(present):
            return None
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size
        for k, shape in zip(keys, ([E, I], [E, I], [E, H])):
            t = header.tensors.get(k)
            if t is None or t["dtype"] != "F32" or list(t["shape"]) != shape:
                raise ConversionError(f"{file}: expert bias {k} is "
                                      f"{'missing' if t is None else t['dtype'] + ' ' + str(tuple(t['shape']))}, "
                                      f"expected F32 {tuple(shape)} beside the others")
        if verification_enabled():
            _verify(file, header, self.meta["files"].get(file.name, {}), keys, set(range(E)), E)
        mf = MappedFile(file, header)
        try:
            return tuple(np.array(mf.array(k)) for k in keys)
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
