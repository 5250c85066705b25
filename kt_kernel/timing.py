"""The one clock of the demos, the doctor, the converter and the benchmarks.

``Stopwatch`` times a block (wall seconds on ``time.perf_counter``) and, when asked, how many
cores other processes kept busy meanwhile; ``time_calls`` times repeated calls of a function;
``step`` prints what is being done and then how long it took.
"""
from __future__ import annotations

import math
import os
import resource
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

__all__ = ["Stopwatch", "CallTimes", "time_calls", "step", "machine_busy_seconds", "own_cpu_seconds"]


def machine_busy_seconds() -> Optional[float]:
    """Busy CPU seconds of the whole machine (/proc/stat, all processes), None where unknown.
    Minus own_cpu_seconds() it tells how much other processes ran meanwhile."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stopwatch:
    """Wall seconds since it was made; with ``load=True`` also the machine's and this process's CPU
    time then, for ``other_cores``."""

    def __init__(self, load: bool = False):
        self._machine0 = machine_busy_seconds() if load else None
        self._own0 = own_cpu_seconds() if load else None
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def other_cores(self) -> Optional[float]:
        """Cores that other processes kept busy since the start, on average (None where
        /proc/stat is unreadable or the stopwatch was made without ``load``)."""
        machine, own, wall = machine_busy_seconds(), own_cpu_seconds(), self.seconds
        if self._machine0 is None or machine is None:
            return None
        return max(0.0, (machine - self._machine0) - (own - self._own0)) / wall


@dataclass
class CallTimes:
    seconds: list          # wall seconds of each timed call
    cpu_seconds: float     # this process's CPU time during the timed calls (all threads)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def busy_cores(self) -> float:
        """Cores this process kept busy during the timed calls, on average."""
        return self.cpu_seconds / sum(self.seconds)


def time_calls(fn: Callable[[], object], calls: int, *, min_seconds: float = 0.0, max_seconds: float = math.inf,
               warmup: int = 0, before: Optional[Callable[[], object]] = None) -> CallTimes:
    """Times calls of ``fn`` after ``warmup`` untimed ones: at least ``calls`` calls and at least
    ``min_seconds`` since the first, unless the calls took ``max_seconds`` in all (then at least 3),
    so that a busy machine does not stretch a demo. ``before`` runs untimed before each call."""
    for _ in range(warmup):
        fn()
    times, cpu, start = [], 0.0, time.perf_counter()
    while len(times) < calls or time.perf_counter() - start < min_seconds:
        if len(times) >= 3 and sum(times) >= max_seconds:
            break
        if before is not None:
            before()
        c0 = own_cpu_seconds()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        cpu += own_cpu_seconds() - c0
        times.append(t1 - t0)
    return CallTimes(times, cpu)


@contextmanager
def step(what: str) -> Iterator[Stopwatch]:
    """Prints what is being done, then how long it took."""
    print(f"  {what}...", end="", flush=True)
    clock = Stopwatch()
    yield clock
    print(f" done ({clock.seconds:.1f} s)", flush=True)
