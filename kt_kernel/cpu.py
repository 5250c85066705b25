"""What the CPU offers and which ISA tier the kernels use."""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

from kt_kernel import _ext

# The scalar reference kernels: `--isas all` leaves them out (minutes per prefill call at the
# protocol's shapes); name the tier to run it.
REFERENCE_TIER = "generic"


def cpu_info() -> dict:
    """What the CPU offers and what the kernels use. Keys: vendor, brand, flags (CPUID bits seen),
    features (the CPU features kernels may use here: CPUID bits the OS enables, AMX with its
    permission; see docs/cpu_features.md), tiers (the named feature sets these features cover),
    best_tier, override, active_tier and active_features (what layers created now are dispatched
    on), amx (why AMX is or is not used), emulated_tiers (the test-only overrides this CPU can run:
    ``["amx_emu"]`` with AVX512-BF16)."""
    return _ext.cpu_info()


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


def resolve_isas(spec: str | None) -> list[str]:
    """The tiers a command line names, in the CPU's order: None -> the tier in use now (the best,
    or KT_KERNEL_ISA's); "all" -> every tier this CPU runs but the scalar reference; otherwise a
    comma-separated list of tiers. Raises ValueError naming the tiers this CPU runs."""
    info = cpu_info()
    host = list(info["tiers"])
    if spec is None:
        return [info["active_tier"]]
    if spec.strip() == "all":
        return [t for t in host if t != REFERENCE_TIER]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no tier named in {spec!r}")
    for n in names:
        if n not in host:
            what = "is not a tier" if n not in _ext.all_tiers() else f"is above this CPU's best tier {info['best_tier']}"
            raise ValueError(f"{n!r} {what}; this CPU runs {', '.join(host)} (or all)")
    return sorted(set(names), key=host.index)


def add_isa_argument(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """The command lines' ISA option: --isa TIER, or with `several` --isas TIERS|all (--isa is
    accepted for it too)."""
    if several:
        parser.add_argument("--isas", "--isa", dest="isas", default=None, metavar="TIERS",
                            help="ISA tiers to run, each forced with kt_kernel.set_isa before its layers are "
                                 f"built: comma-separated names, or all (every tier this CPU runs but "
                                 f"{REFERENCE_TIER}); default: the tier in use")
    else:
        parser.add_argument("--isa", default=None, metavar="TIER",
                            help="force an ISA tier, one of cpu_info()['tiers'] (kt_kernel.set_isa)")


def apply_isa_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--isa TIER: set_isa(args.isa) now, a tier this CPU lacks reported as the parser's usage error."""
    if args.isa is None:
        return
    try:
        set_isa(args.isa)
    except (ValueError, RuntimeError) as e:
        parser.error(f"--isa {args.isa}: {e}")


def isas_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """--isas TIERS: resolve_isas(args.isas), a bad name reported as the parser's usage error."""
    try:
        return resolve_isas(args.isas)
    except ValueError as e:
        parser.error(f"--isas {args.isas}: {e}")
