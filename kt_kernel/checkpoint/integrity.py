"""Checksums of converted folders: what the converter records and what loading verifies.

Each layer file's safetensors ``__metadata__`` holds ``xxh3``: for every tensor, the xxh3-64 of
each expert's slice (16 hex digits per expert, in expert order), so a loader verifies exactly the
experts it reads (the CPU slots') and nothing else, at memory speed. ``kt_kernel_meta.json`` holds
per layer file the xxh3-64 of its header bytes (``header_xxh3``), so every byte that loading reads
is covered; the whole-file xxh3-64 of every other file the converter writes (``other_files``:
non-expert shards, the index, copied files); and ``meta_xxh3``, the xxh3-64 of its own other fields.

Folders converted before these checksums have a sha256 per layer file in ``kt_kernel_meta.json``;
loading one verifies that digest over the whole layer file (slower: docs/benchmarks/notes.md,
"Converter and loading").

Verification is on unless ``KT_KERNEL_VERIFY_WEIGHTS=0`` is set.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import xxhash

from kt_kernel.checkpoint.errors import ConversionError

__all__ = ["VERIFY_ENV", "verification_enabled", "expert_digests", "layer_digests", "verify_experts",
           "meta_digest", "header_xxh3", "file_xxh3", "sha256_file", "DIGEST_KEY"]

VERIFY_ENV = "KT_KERNEL_VERIFY_WEIGHTS"
DIGEST_KEY = "xxh3"          # the layer file metadata field
_HEX = 16                    # hex digits of one xxh3-64 digest
_CHUNK = 16 << 20            # bytes read per pread when hashing whole files


def verification_enabled() -> bool:
    """False only when KT_KERNEL_VERIFY_WEIGHTS is 0 (any other value but 1 raises)."""
    v = os.environ.get(VERIFY_ENV, "1").strip()
    if v not in ("0", "1"):
        raise ValueError(f"{VERIFY_ENV}={v!r}: expected 1 (verify converted weights, the default) or 0 (skip)")
    return v == "1"


def expert_digests(buf, num_experts: int) -> str:
    """The per-expert xxh3-64 digests of an [E, ...] array's bytes, concatenated in hex."""
    raw = memoryview(buf).cast("B")
    step = raw.nbytes // num_experts
    return "".join(xxhash.xxh3_64_hexdigest(raw[e * step:(e + 1) * step]) for e in range(num_experts))


def layer_digests(tensors: dict, num_experts: int) -> str:
    """The ``xxh3`` metadata value of a layer file from its arrays (key -> (dtype, shape, array))."""
    return json.dumps({k: expert_digests(np.ascontiguousarray(a), num_experts)
                       for k, (_, _, a) in sorted(tensors.items())}, separators=(",", ":"))


def _recorded(header, num_experts: int) -> dict:
    raw = header.metadata.get(DIGEST_KEY)
    try:
        sums = json.loads(raw)
        ok = isinstance(sums, dict) and all(isinstance(v, str) and len(v) == _HEX * num_experts
                                            for v in sums.values())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConversionError(f"{header.path}: its {DIGEST_KEY} checksums are unreadable (the file header is "
                              "damaged); re-run the converter with --resume to rewrite the layer")
    return sums


def verify_experts(header, keys: Iterable[str], experts: Optional[Iterable[int]], num_experts: int) -> None:
    """Checks the bytes of ``experts`` (all when None) of each tensor ``keys`` of a layer file
    against the digests in its header; raises ConversionError naming the file, tensor and expert.
    Reads with pread into one reused buffer, not through a map, so verifying adds one expert's
    slice to RSS whatever the layer's size (the packer's map then finds the pages in the cache)."""
    sums = _recorded(header, num_experts)
    experts = range(num_experts) if experts is None else sorted(set(experts))
    fd = os.open(header.path, os.O_RDONLY)
    try:
        for key in keys:
            if key not in sums:
                raise ConversionError(f"{header.path}: no {DIGEST_KEY} checksum for {key}; re-run the converter "
                                      "with --resume to rewrite the layer")
            b, e = header.tensors[key]["data_offsets"]
            step = (e - b) // num_experts
            buf = np.empty(step, dtype=np.uint8)
            for x in experts:
                got = os.preadv(fd, [buf], header.data_start + b + x * step)
                if got != step or xxhash.xxh3_64_hexdigest(buf) != sums[key][x * _HEX:(x + 1) * _HEX]:
                    raise ConversionError(f"{header.path}: expert {x} of {key} does not match its checksum: the "
                                          "file was changed or damaged after conversion; re-run the converter "
                                          "with --resume to rewrite it (or set "
                                          f"{VERIFY_ENV}=0 to load it unverified)")
    finally:
        os.close(fd)


def header_xxh3(path) -> str:
    """xxh3-64 of a safetensors file's first 8 + header-length bytes (its header)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        return xxhash.xxh3_64_hexdigest(raw + f.read(int.from_bytes(raw, "little")))


def meta_digest(record: dict) -> str:
    """The ``meta_xxh3`` of a kt_kernel_meta.json record: xxh3-64 of its other fields."""
    rest = {k: v for k, v in record.items() if k != "meta_xxh3"}
    return xxhash.xxh3_64_hexdigest(json.dumps(rest, sort_keys=True).encode())


def _hash_file(path: Path, h) -> str:
    buf = np.empty(_CHUNK, dtype=np.uint8)  # one private buffer: no map, so RSS stays at one chunk
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while True:
            n = os.preadv(fd, [buf], off)
            if n == 0:
                break
            h.update(buf[:n])
            off += n
    finally:
        os.close(fd)
    return h.hexdigest()


def file_xxh3(path) -> str:
    return _hash_file(Path(path), xxhash.xxh3_64())


def sha256_file(path) -> str:
    return _hash_file(Path(path), hashlib.sha256())
