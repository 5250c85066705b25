"""Bit-exact output digests of the MoE test matrix, so that a refactor can prove it changed no
result: every (method, tier, shape, inputs, placement) case of tests/test_moe_matrix.py stores the
sha256 of its bf16 output in tests/data/output_digests.json.

    KT_KERNEL_RECORD_DIGESTS=1 python3 -m pytest tests/test_moe_matrix.py   # (re)record
    python3 -m pytest tests/test_moe_matrix.py                             # check

Outputs are deterministic for a given tier, shape, thread count and sub-pool count (each output
element is summed by one thread in a fixed order), so any change in a digest is a change in what
users get. A tier missing from the file (e.g. real "amx" on a host that recorded only "amx_emu")
is recorded on its own host and not checked elsewhere."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

PATH = Path(__file__).parent / "data" / "output_digests.json"
RECORDING = os.environ.get("KT_KERNEL_RECORD_DIGESTS") == "1"


def digest(out: torch.Tensor) -> str:
    return hashlib.sha256(out.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()[:32]


class OutputDigests:
    def __init__(self):
        self.stored = json.loads(PATH.read_text()) if PATH.exists() else {}
        self.recorded: dict[str, str] = {}

    def check(self, key: str, out: torch.Tensor) -> None:
        d = digest(out)
        if RECORDING:
            self.recorded[key] = d
            return
        want = self.stored.get(key)
        assert want is None or want == d, (
            f"{key}: output digest {d} differs from the recorded {want} ({PATH.name}): the result "
            "changed bit for bit; if that is intended, re-record with KT_KERNEL_RECORD_DIGESTS=1")

    def save(self) -> None:
        if RECORDING and self.recorded:
            merged = {**self.stored, **self.recorded}
            PATH.parent.mkdir(exist_ok=True)
            PATH.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")
