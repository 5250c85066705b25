"""What the CPU offers and which ISA tier the kernels use."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from kt_kernel import _ext


def cpu_info() -> dict:
    """What the CPU offers and what the kernels use. Keys: vendor, brand, flags (CPUID bits seen;
    on aarch64 the HWCAP bits: asimd, asimddp, i8mm, bf16, sve, sve2), sve_vector_bits (0 without
    SVE), features (the CPU features kernels may use here: CPUID bits the OS enables, AMX with its
    permission, the ARM HWCAP ones; see docs/cpu_features.md), tiers (the named feature sets these features cover),
    best_tier, override, active_tier and active_features (what layers created now are dispatched
    on), amx (why AMX is or is not used), emulated_tiers (the test-only overrides this CPU can run:
    ``["amx_emu"]`` with AVX512-BF16), numa_nodes (the NUMA nodes as the OS names them: id, cpus,
    the allowed ones, the memory node; kt_kernel.numa)."""
    from dataclasses import asdict

    from kt_kernel.numa import topology

    return {**_ext.cpu_info(), "numa_nodes": [asdict(n) for n in topology()]}


def set_isa(name: str | None) -> None:
    """Force the kernels of layers created from now on to an ISA tier's feature set, one the CPU
    covers (one of ``cpu_info()["tiers"]``), or clear the override with ``None``. The environment
    variable ``KT_KERNEL_ISA`` sets the same override at start-up. Asking for a tier this CPU
    lacks raises RuntimeError; an unknown name raises ValueError.

    ``"amx_emu"`` is for tests only: layers then run the AMX tile kernels on the software tile
    emulator (slow: for checking them on CPUs without AMX) and the ``avx512_bf16`` kernels
    otherwise; it is never chosen automatically."""
    _ext.set_isa(name or "")


@contextmanager
def forced_isa(name: str | None) -> Iterator[str]:
    """``set_isa(name)`` for the layers created inside the block, then the override from before
    (``KT_KERNEL_ISA``'s or none) again. Yields the tier in use inside the block."""
    before = cpu_info()["override"] or None
    set_isa(name)
    try:
        yield cpu_info()["active_tier"]
    finally:
        set_isa(before)
