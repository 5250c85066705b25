"""Thread counts: the cores this process may run on, and torch's own thread pool."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


def all_cores() -> int:
    """The CPUs this process may run on (its affinity mask; the CPU count off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n inside the block, the previous count again after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
