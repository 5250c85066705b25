"""The GGUF reader: llama.cpp model files, whose routed experts method LLAMAFILE runs as they are.

The container is read by the ``gguf`` package (gguf.GGUFReader, the llama.cpp project's own
Python reader: a memory map, headers parsed, no tensor data copied). This module finds one MoE
layer's expert tensors in it and hands out zero-copy uint8 views of their blocks:

  blk.{L}.ffn_gate_exps.weight   ggml ne = [H, I, E]   logical [E, I, H]: expert e, row n, H weights
  blk.{L}.ffn_up_exps.weight     ggml ne = [H, I, E]   logical [E, I, H]
  blk.{L}.ffn_down_exps.weight   ggml ne = [I, H, E]   logical [E, H, I]

ggml lists dimensions innermost first (ne0 = the row length K), the reverse of numpy's order.
A projection is viewed as uint8 [E, N, row_bytes], row_bytes = K / block_size * type_size
(gguf.GGML_QUANT_SIZES): the file's bytes, one row of N blocks laid end to end, expert e at index
e. gate and up share one ggml type; down may have another (Q4_K_M files: Q4_K gate/up, Q6_K down).

``weight_path`` is a .gguf file, any shard of a split set (``name-0000k-of-0000N.gguf``, whose
metadata ``split.no`` / ``split.count`` / ``split.tensors.count`` say which shard it is and how
many tensors the set holds), or a folder holding one model (one file or one split set).
Parsing a header is slow (a tokenizer is ~10^5 strings), and every wrapper of a model (one per
layer) opens the same file, so opened readers are kept per resolved path for the process.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import gguf
import numpy as np

from kt_kernel.checkpoint.errors import ConversionError
from kt_kernel.formats import GGUF_METHOD as METHOD, all_formats, gguf_formats

__all__ = ["METHOD", "GGUFError", "GGUFCheckpoint", "GGUFTensor", "open_gguf", "is_gguf", "ggml_type_formats",
           "PROJ_TENSORS"]

# ggml tensor name of each projection (0 gate, 1 up, 2 down) of layer L's routed experts
PROJ_TENSORS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")

_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


class GGUFError(ConversionError):
    """A GGUF file (or set, or folder) that cannot serve a layer; the message names the file and
    the tensor or metadata key."""


def ggml_type_formats() -> dict:
    """{ggml type name: kt format name} of the ggml types whose blocks the kernels read as they
    are: the format records' ``gguf_type`` (Q4_K -> q4_K, ..., BF16 -> bf16), in ggml's type order."""
    records = sorted(gguf_formats(), key=lambda r: r["gguf_type"])
    return {gguf.GGMLQuantizationType(r["gguf_type"]).name: r["name"] for r in records}


@dataclass(frozen=True)
class GGUFTensor:
    """One projection of a layer's experts: ``blocks`` is a read-only uint8 [E, N, row_bytes] view
    of the mapped file (``ggml_type`` blocks, ``format`` the kt format that reads them)."""
    name: str
    file: Path
    ggml_type: str
    format: str
    blocks: np.ndarray


class _PastEnd(ValueError):
    def __init__(self, start, end, size):
        super().__init__(f"bytes {start}..{end} lie past its end ({size} bytes): the file is truncated or damaged")


class _BoundedReader(gguf.GGUFReader):
    """gguf.GGUFReader whose reads past the end of the file raise. The stock reader slices its
    memory map, so a truncated or damaged file gives short arrays: an IndexError somewhere, a
    reshape error, or (an array length field of 2**60) a loop that never ends."""

    def _get(self, offset, dtype, count=1, *args, **kwargs):
        end = int(offset) + np.dtype(dtype).itemsize * int(count)
        if end > len(self.data):
            raise _PastEnd(int(offset), end, len(self.data))
        return super()._get(offset, dtype, count, *args, **kwargs)


def _open_file(file: Path):
    """A GGUFReader of ``file``; GGUFError naming it when it cannot be read as GGUF."""
    try:
        with open(file, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise GGUFError(f"cannot read {file}: {e}") from e
    if magic != b"GGUF":
        raise GGUFError(f"{file} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    try:
        return _BoundedReader(file, "r")
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, OSError, UnicodeDecodeError) as e:
        # the reader's own errors: a bad version, duplicate keys or tensors, an unknown ggml type
        # id or value type, a truncated header (past the end)
        raise GGUFError(f"{file} is not a readable GGUF file: {e}") from e


def _field(reader, key: str):
    """Metadata ``key``: an int, float, bool or str, a list for an array, None when absent (read
    from the field's parts, as every gguf release lays them out)."""
    f = reader.get_field(key)
    if f is None:
        return None
    string = gguf.GGUFValueType.STRING
    values = [bytes(f.parts[i]).decode("utf-8", "replace") if f.types[-1] == string else f.parts[i][0].item()
              for i in f.data]
    return values if f.types[0] == gguf.GGUFValueType.ARRAY else values[0]


def _split_of(reader, file: Path) -> Optional[tuple]:
    """(split.no, split.count, split.tensors.count) of a shard, None for a file that is no shard."""
    count = _field(reader, "split.count")
    if count is None:
        return None
    no, total = _field(reader, "split.no"), _field(reader, "split.tensors.count")
    for k, v in (("split.no", no), ("split.count", count), ("split.tensors.count", total)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise GGUFError(f"{file}: metadata {k} is {v!r}, expected a non-negative integer")
    if not 0 <= no < count:
        raise GGUFError(f"{file}: metadata split.no={no} is out of range for split.count={count}")
    return no, count, total


def shard_names(prefix: str, count: int) -> list:
    """llama.cpp's names of a split set's shards (llama_split_path): 1-based, five digits."""
    return [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def _resolve(path: Path) -> Path:
    """The .gguf file of ``path``: the file itself, or the model of a folder (one file, or the
    first shard of one split set)."""
    if not path.is_dir():
        if not path.exists():
            raise GGUFError(f"{path} does not exist")
        return path
    files = sorted(p for p in path.iterdir() if p.name.endswith(".gguf") and p.is_file())
    if not files:
        raise GGUFError(f"{path} holds no .gguf file")
    models = {}  # model name -> its first file
    for p in files:
        m = _SPLIT_NAME.match(p.name)
        name = f"{m['prefix']}-*-of-{m['count']}.gguf" if m else p.name
        models.setdefault(name, p)
    if len(models) > 1:
        raise GGUFError(f"{path} holds {len(models)} GGUF models: {', '.join(sorted(models))}; give weight_path as "
                        "the file (or one shard of the split set) to load")
    return next(iter(models.values()))


def _open_set(file: Path) -> list:
    """[(path, reader)] of ``file`` and, when it is a shard of a split set, of every shard in
    order; every shard present, numbered as its name says, and the set's tensor count right."""
    reader = _open_file(file)
    split = _split_of(reader, file)
    if split is None or split[1] == 1:
        return [(file, reader)]
    no, count, total = split
    m = _SPLIT_NAME.match(file.name)
    if m is None or int(m["count"]) != count:
        raise GGUFError(f"{file} is shard {no + 1} of a split set of {count} (metadata split.count), but its name does "
                        f"not follow llama.cpp's NAME-{no + 1:05d}-of-{count:05d}.gguf, so the other shards cannot be "
                        "found")
    names = shard_names(m["prefix"], count)
    missing = [n for n in names if not (file.parent / n).is_file()]
    if missing:
        raise GGUFError(f"{file} is one shard of a split set of {count}, and {len(missing)} of them "
                        f"{'is' if len(missing) == 1 else 'are'} missing from {file.parent}: {', '.join(missing)}")
    shards = []
    for i, n in enumerate(names):
        p = file.parent / n
        r = reader if p == file else _open_file(p)
        s = _split_of(r, p)
        if s is None or s[:2] != (i, count):
            raise GGUFError(f"{p}: metadata split.no / split.count are {s[:2] if s else None}, expected ({i}, {count}) "
                            "from its name: a shard of another split set?")
        if s[2] != total:
            raise GGUFError(f"{p}: metadata split.tensors.count is {s[2]}, but {file.name} says {total}: shards of "
                            "different split sets")
        shards.append((p, r))
    found = sum(len(r.tensors) for _, r in shards)
    if found != total:
        raise GGUFError(f"the split set {', '.join(names)} holds {found} tensors, but its metadata split.tensors.count "
                        f"says {total}: a shard is truncated or from another set")
    return shards


def _positive(file: Path, key: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 2 ** 31:
        raise GGUFError(f"{file}: metadata {key} is {v!r}, expected a positive integer")
    return v


class GGUFCheckpoint:
    """The routed experts of a GGUF model (a file or a split set), read in place: each projection
    is its file's blocks, handed to the kernel of the matching kt format (``stored_method``
    LLAMAFILE; ``layer_arrays``)."""
    kind = "gguf"
    stored_method = METHOD

    def __init__(self, path):
        self.path = Path(path)
        self.shards = _open_set(self.path)
        file, first = self.shards[0]
        self.tensors = {}  # name -> (shard path, ReaderTensor)
        for p, r in self.shards:
            if r.byte_order != "I":
                raise GGUFError(f"{p} is a GGUF file of the other byte order (big-endian): its blocks' scales would be "
                                "read byte-swapped; convert it to a little-endian file")
            for t in r.tensors:
                if t.name in self.tensors:
                    raise GGUFError(f"{p}: tensor {t.name} is also in {self.tensors[t.name][0]}")
                end = t.data_offset + t.n_bytes
                if end > len(r.data):
                    raise GGUFError(f"{p}: tensor {t.name} lies at bytes {t.data_offset}..{end}, past the end of the "
                                    f"file ({len(r.data)} bytes): the file is truncated")
                self.tensors[t.name] = (p, t)
        arch = _field(first, "general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{file}: metadata general.architecture is {arch!r}, expected a string")
        self.arch = arch

        def meta(key, fallback=None):
            v = _field(first, key)
            if v is None and fallback is not None:
                v, key = _field(first, fallback), fallback
            if v is None:
                raise GGUFError(f"{file}: metadata {key} is missing" + (
                    " (a model without routed experts?)" if key.endswith(".expert_count") else ""))
            return _positive(file, key, v)

        self.num_experts = meta(f"{arch}.expert_count")
        self.experts_per_token = meta(f"{arch}.expert_used_count")
        self.hidden_size = meta(f"{arch}.embedding_length")
        # Mixtral's files (arch "llama") give the experts' size as the feed-forward length
        self.intermediate_size = meta(f"{arch}.expert_feed_forward_length", f"{arch}.feed_forward_length")
        blk = re.compile(r"^blk\.(\d+)\.ffn_gate_exps\.weight$")
        self.moe_layers = sorted(int(m[1]) for m in map(blk.match, self.tensors) if m)
        digest = hashlib.sha256()
        for p, r in self.shards:
            digest.update(f"{p.name}:{len(r.data)}:".encode())
            for t in r.tensors:
                digest.update(f"{t.name}:{int(t.tensor_type)}:{t.shape.tolist()}:{t.data_offset};".encode())
        self.fingerprint = digest.hexdigest()
        # The metadata arrays (the tokenizer's ~10^5 strings and merges, each parsed into numpy
        # views) hold ~450 MB of Python objects, which the cache would keep for the process's
        # life; what this reader needs of the metadata is read above.
        for _, r in self.shards:
            for key in [k for k, f in r.fields.items() if f.types[:1] == [gguf.GGUFValueType.ARRAY]]:
                del r.fields[key]

    def metadata(self, key: str):
        """Metadata ``key`` of the first file (an int, float, bool or str), None when absent; the
        arrays (the tokenizer's) are not kept."""
        return _field(self.shards[0][1], key)

    # ---- one layer ------------------------------------------------------------------------

    def _tensor(self, layer: int, j: int):
        name = f"blk.{layer}.{PROJ_TENSORS[j]}.weight"
        if name not in self.tensors:
            fused = f"blk.{layer}.ffn_gate_up_exps.weight"
            why = (f" (it has {fused}, gate and up fused in one tensor, which is not supported)"
                   if fused in self.tensors else
                   f" (its MoE layers: {_ranges(self.moe_layers)})" if layer not in self.moe_layers else "")
            raise GGUFError(f"{self.path} has no tensor {name}, the routed experts of layer {layer}{why}")
        return name, self.tensors[name]

    def projections(self, layer: int) -> list:
        """[gate, up, down] of ``layer`` as GGUFTensor views, each checked against the metadata:
        three dimensions [E, N, K] as the metadata's expert count, hidden and expert sizes say, a
        supported ggml type, whole blocks per row; gate and up of one type."""
        supported = ggml_type_formats()
        E, H, I = self.num_experts, self.hidden_size, self.intermediate_size
        biased = [f"blk.{layer}.{p}.bias" for p in PROJ_TENSORS if f"blk.{layer}.{p}.bias" in self.tensors]
        if biased:  # gpt-oss: without its biases and clamped SwiGLU the layer would compute something else
            raise GGUFError(f"{self.path}: layer {layer}'s experts have biases ({', '.join(biased)}; gpt-oss), which "
                            f"method {METHOD} does not read; run the Hugging Face MXFP4 release with method MXFP4, "
                            "which takes the biases and the clamped SwiGLU")
        out = []
        for j in range(3):
            name, (file, t) = self._tensor(layer, j)
            N, K = (H, I) if j == 2 else (I, H)
            ne = [int(x) for x in t.shape]
            if ne != [K, N, E]:
                raise GGUFError(f"{file}: tensor {name} has ggml shape ne={ne} (logical [E, N, K] = {ne[::-1]}), but the "
                                f"metadata ({self.arch}.expert_count={E}, embedding_length={H}, expert size {I}) says "
                                f"ne={[K, N, E]}")
            type_name = t.tensor_type.name
            if type_name not in supported:
                raise GGUFError(f"{file}: tensor {name} has ggml type {type_name}, which method {METHOD} does not run; "
                                f"supported types: {', '.join(supported)}")
            block, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
            if K % block:
                raise GGUFError(f"{file}: tensor {name} has rows of {K} weights, not whole {type_name} blocks of "
                                f"{block}")
            row_bytes = K // block * type_size
            if t.n_bytes != E * N * row_bytes:
                raise GGUFError(f"{file}: tensor {name} holds {t.n_bytes} bytes, expected {E * N * row_bytes}")
            data = self._data(file)
            blocks = np.asarray(data[t.data_offset:t.data_offset + t.n_bytes]).reshape(E, N, row_bytes)
            out.append(GGUFTensor(name, file, type_name, supported[type_name], blocks))
        gate, up = out[0], out[1]
        if gate.ggml_type != up.ggml_type:
            raise GGUFError(f"{gate.file}: {gate.name} is {gate.ggml_type} but {up.name} is {up.ggml_type}; method "
                            f"{METHOD} needs gate and up of one type (down may differ)")
        return out

    def _data(self, file: Path):
        return next(r.data for p, r in self.shards if p == file)

    def layer_formats(self, layer: int) -> tuple:
        """(kt format of gate and up, kt format of down) of ``layer``."""
        gate, _, down = self.projections(layer)
        return gate.format, down.format

    def check_layer(self, layer: int, method: str, hidden_size: int, intermediate_size: int,
                    num_experts: Optional[int] = None, num_experts_per_tok: Optional[int] = None) -> None:
        """Raises GGUFError unless ``layer``'s experts are in the file, consistent with its metadata
        and of this geometry (and ``num_experts`` experts, when given: the identity map of a load
        without one; ``num_experts_per_tok``, when given)."""
        if method != METHOD:
            raise GGUFError(f"{self.path} is a GGUF model, whose experts keep their own block formats; load it with "
                            f"method={METHOD!r} (method {method!r} quantizes float weights)")
        self.projections(layer)
        arch = self.arch
        for key, got, want in ((f"{arch}.embedding_length (hidden_size)", self.hidden_size, hidden_size),
                               (f"{arch}.expert_feed_forward_length (moe_intermediate_size)", self.intermediate_size,
                                intermediate_size),
                               (f"{arch}.expert_count (num_experts; no physical_to_logical_map given)",
                                self.num_experts, num_experts),
                               (f"{arch}.expert_used_count (num_experts_per_tok)", self.experts_per_token,
                                num_experts_per_tok)):
            if want is not None and got != want:
                raise GGUFError(f"{self.path}: {key} is {got} in the GGUF file but {want} in this KTMoEWrapper")

    @contextmanager
    def layer_arrays(self, layer: int, experts: set) -> Iterator[dict]:
        """(proj, part) -> the [E, ...] array of ``layer``: each projection's format has one array
        (part "blocks" of a block format, the values of bf16 / f16 / f32), which is the file's
        bytes, here a zero-copy uint8 [E, N, row_bytes] view of the mapped file. ``experts`` is not
        needed: nothing is verified, and the map stays open (the reader is cached)."""
        records = {r["name"]: r for r in all_formats()}
        arrays = {}
        for proj, t in zip(("gate", "up", "down"), self.projections(layer)):
            parts = [a["part"] for a in records[t.format]["arrays"]]
            if len(parts) != 1:
                raise GGUFError(f"format {t.format} has arrays {parts}; a GGUF tensor is one array of blocks")
            arrays[(proj, parts[0])] = t.blocks
        yield arrays


def _ranges(layers: list) -> str:
    if not layers:
        return "none"
    return f"{layers[0]}..{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)


def is_gguf(path) -> bool:
    """True for a .gguf file or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        return any(p.name.endswith(".gguf") for p in path.iterdir())
    return path.name.endswith(".gguf") or _starts_gguf(path)


def _starts_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def open_gguf(path) -> GGUFCheckpoint:
    """The reader of the GGUF model at ``path`` (a file, a shard of a split set, or a folder of
    one model), shared by every caller in the process while its files are unchanged."""
    file = _resolve(Path(path)).resolve()
    with _CACHE_LOCK:
        cached = _CACHE.get(file)
        if cached is not None and cached[0] == _stamp(cached[1]):
            return cached[1]
        reader = GGUFCheckpoint(file)
        _CACHE[file] = (_stamp(reader), reader)
        return reader


def _stamp(reader: GGUFCheckpoint) -> tuple:
    """Size and modification time of every shard: a file rewritten in place is read again."""
    out = []
    for p, _ in reader.shards:
        try:
            st = os.stat(p)
        except OSError:
            return ()
        out.append((st.st_size, st.st_mtime_ns))
    return tuple(out)
