"""Safetensors reading and writing for files far larger than memory.

The safetensors file format: 8 bytes little-endian header length n, n bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
offsets relative to the end of the header), then the data. Reading memory-maps the file, so a
tensor costs host memory only for the pages touched; writing streams each array's buffer into
``name.tmp`` and renames it, so a file under its final name is always complete.

Why not the safetensors package's own API (``safe_open``, ``save_file``), which the tests use:
loading and verification work on byte ranges (one expert's slice of a tensor, hashed with pread;
addresses inside a map handed to the packer), and safe_open exposes neither the data offsets nor
views of its map, only tensors copied out of it; save_file needs every tensor in memory at once,
where the converter streams a checkpoint's non-expert tensors one at a time. So the package
needs neither safetensors nor its Rust extension at run time.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["SafetensorsError", "Header", "read_header", "list_shards", "MappedFile", "MappedFolder", "as_float32",
           "write_file", "NUMPY_DTYPES"]

# safetensors dtype -> numpy dtype of the same width (bf16 and fp8 are read as raw bits)
NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I8": np.int8, "U8": np.uint8,
                "I32": np.int32, "I64": np.int64, "F64": np.float64, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
                "F8_E8M0": np.uint8,
                "BOOL": np.bool_, "I16": np.int16, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
_DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int8): "I8",
                np.dtype(np.uint8): "U8", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}
_ALIGN = 8


class SafetensorsError(ValueError):
    """A file that is not a complete safetensors file."""


class Header:
    def __init__(self, path: Path, tensors: dict, metadata: dict, data_start: int, file_size: int):
        self.path, self.tensors, self.metadata = path, tensors, metadata
        self.data_start, self.file_size = data_start, file_size

    def nbytes(self, name: str) -> int:
        b, e = self.tensors[name]["data_offsets"]
        return e - b


# custom: the data offsets, which safe_open does not expose
def read_header(path) -> Header:
    """Parses the header of ``path`` and checks that every tensor's bytes lie inside the file
    (a truncated file raises SafetensorsError naming the tensor and both sizes)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{path} is {size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                raise SafetensorsError(f"{path}: header length {n} exceeds the file size {size}: truncated or not safetensors")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path} is not a readable safetensors file: {e}") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path} is not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + n
    for name, t in header.items():
        b, e = t["data_offsets"]
        if start + e > size:
            raise SafetensorsError(f"{path} is truncated: tensor {name} ends at byte {start + e}, "
                                   f"the file has {size} bytes")
    return Header(path, header, metadata, start, size)


def list_shards(path) -> tuple[list, dict | None]:
    """(safetensors file names, index weight_map or None) of a checkpoint folder: the files named
    by model.safetensors.index.json when it exists, else every *.safetensors file."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if not index.exists():
        return sorted(p.name for p in path.glob("*.safetensors")), None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise SafetensorsError(f"{index} has no readable weight_map: {e}") from e
    return sorted(set(weight_map.values())), weight_map


# custom: zero-copy views whose addresses the packer reads, and a map that is closed (its pages
# dropped) as soon as a layer is packed; safe_open returns copies, and keeps its map while open
class MappedFile:
    """A read-only memory map of a safetensors file; ``array(name)`` is a zero-copy numpy view."""

    def __init__(self, path, header: Header = None):
        self.header = header or read_header(path)
        with open(self.header.path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)

    def array(self, name: str) -> np.ndarray:
        t = self.header.tensors[name]
        b, e = t["data_offsets"]
        raw = self._buf[self.header.data_start + b:self.header.data_start + e]
        return raw.view(NUMPY_DTYPES[t["dtype"]]).reshape(t["shape"])

    def raw(self, name: str) -> memoryview:
        b, e = self.header.tensors[name]["data_offsets"]
        return memoryview(self._mm)[self.header.data_start + b:self.header.data_start + e]

    def close(self) -> None:
        self._buf = None
        try:
            self._mm.close()
        except BufferError:  # a view is still alive; the map goes when it does
            pass


class MappedFolder:
    """The memory maps of a folder's safetensors files, each opened when a tensor of it is first
    asked for. ``files``: tensor name -> (file name, header entry), as an index of the folder
    holds them. ``array(name)`` is a zero-copy view; ``close()`` closes every map (a map whose
    views are still alive goes when they do)."""

    def __init__(self, folder, files: dict):
        self.folder, self.files, self.maps = Path(folder), files, {}

    def array(self, name: str) -> np.ndarray:
        fname = self.files[name][0]
        if fname not in self.maps:
            self.maps[fname] = MappedFile(self.folder / fname)
        return self.maps[fname].array(name)

    def close(self) -> None:
        for m in self.maps.values():
            m.close()


def as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """The fp32 values of a float tensor read as its raw elements (NUMPY_DTYPES): F32, F16, BF16
    bits, or F8_E8M0 exponents (2^(s - 127): fp32's bit pattern s << 23, s = 0 the subnormal
    2^-127, 255 NaN); exact for each."""
    if dtype in ("F32", "F16"):
        return raw.astype(np.float32)
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E8M0":
        bits = raw.astype(np.uint32) << 23
        bits[raw == 0] = 0x00400000
        bits[raw == 255] = 0x7FC00000
        return bits.view(np.float32)
    raise SafetensorsError(f"dtype {dtype} is not a float dtype as_float32 reads")


# custom: bounded RSS (tensors produced one at a time, see below), fsync before the rename; save_file
# takes them all at once
def write_file(path, tensors: dict, metadata: dict) -> int:
    """Writes ``tensors`` to ``path`` via ``path.tmp``, fsynced and renamed. A tensor is a numpy
    array, (dtype name, shape, buffer), or (dtype name, shape, nbytes, read) where read() returns
    the buffer when its turn comes, so that only one such tensor is in memory at a time. Keys are
    written in sorted order, so the same tensors give the same bytes. Returns the file size."""
    path = Path(path)
    entries, offset = {}, 0
    items = []
    for name in sorted(tensors):
        v = tensors[name]
        if isinstance(v, np.ndarray):
            v = (_DTYPE_NAMES[v.dtype], list(v.shape), np.ascontiguousarray(v))
        if len(v) == 3:
            dtype, shape, buf = v
            n, read = memoryview(buf).nbytes, (lambda buf=buf: buf)
        else:
            dtype, shape, n, read = v
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        items.append((name, n, read))
        offset += n
    head = {"__metadata__": {k: str(v) for k, v in metadata.items()}, **entries}
    hb = json.dumps(head, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % _ALIGN)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name, n, read in items:
                view = memoryview(read()).cast("B")
                if view.nbytes != n:
                    raise ValueError(f"{path}: tensor {name} gave {view.nbytes} bytes, {n} were announced")
                f.write(view)
                del view
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a partial file left behind (ENOSPC, EROFS, a bad tensor)
        raise
    return 8 + len(hb) + offset
