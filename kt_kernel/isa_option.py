"""The command lines' ISA-tier option: --isa TIER (set_isa before the layers are built) and
--isas TIERS|all (the tiers a benchmark runs in turn)."""
from __future__ import annotations

import argparse

from kt_kernel import _ext
from kt_kernel.cpu import cpu_info, set_isa

# The scalar reference kernels: `--isas all` leaves them out (minutes per prefill call at the
# protocol's shapes); name the tier to run it.
REFERENCE_TIER = "generic"


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
            if n not in _ext.all_tiers():
                what = "is not a tier"
            elif set(_ext.tier_features(n)).isdisjoint(_ext.tier_features(info["best_tier"])) and info["best_tier"] != REFERENCE_TIER:
                what = "is a tier of the other architecture (x86-64 or aarch64)"
            else:
                what = f"is above this CPU's best tier {info['best_tier']}"
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
