"""The ISA-tier option shared by the command lines (kt_kernel.isa_option): --isa TIER and --isas TIERS|all."""
from __future__ import annotations

import argparse

import pytest

import kt_kernel
from kt_kernel import _ext
from kt_kernel.cpu import forced_isa
from kt_kernel.isa_option import REFERENCE_TIER, add_isa_argument, apply_isa_argument, isas_argument, resolve_isas

HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
ALL_TIERS = list(_ext.all_tiers())
# the next tier of the host's chain (x86-64's or aarch64's, tests/test_cpu_features.py), if any
ABOVE_BEST = next((t for t in ALL_TIERS if t not in HOST_TIERS and set(_ext.tier_features(HOST_TIERS[-1])) <
                   set(_ext.tier_features(t))), None)
# a tier of the other architecture's chain (none on a CPU that runs only the reference)
OTHER_ARCH = next((t for t in ALL_TIERS if REFERENCE_TIER not in (t, HOST_TIERS[-1]) and
                   set(_ext.tier_features(t)).isdisjoint(_ext.tier_features(HOST_TIERS[-1]))), None)


def test_resolve_default_is_the_tier_in_use():
    assert resolve_isas(None) == [kt_kernel.cpu_info()["active_tier"]]


def test_resolve_all_is_every_host_tier_but_the_reference():
    assert resolve_isas("all") == [t for t in HOST_TIERS if t != REFERENCE_TIER]


def test_resolve_list_in_cpu_order_without_repeats():
    want = HOST_TIERS[::-1]
    assert resolve_isas(",".join(want + want[:1])) == HOST_TIERS


def test_resolve_rejects_unknown_and_absent_tiers():
    with pytest.raises(ValueError, match=r"'sse9' is not a tier; this CPU runs generic"):
        resolve_isas("generic,sse9")
    if ABOVE_BEST is not None:
        with pytest.raises(ValueError, match=f"'{ABOVE_BEST}' is above this CPU's best tier"):
            resolve_isas(ABOVE_BEST)
    if OTHER_ARCH is not None:
        with pytest.raises(ValueError, match=f"'{OTHER_ARCH}' is a tier of the other architecture"):
            resolve_isas(OTHER_ARCH)
    with pytest.raises(ValueError, match="no tier named"):
        resolve_isas(" , ")


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_forced_isa_restores_the_override(tier):
    before = kt_kernel.cpu_info()["override"]
    with forced_isa(tier) as active:
        assert active == tier == kt_kernel.cpu_info()["active_tier"]
    assert kt_kernel.cpu_info()["override"] == before


def test_forced_isa_restores_after_an_error():
    before = kt_kernel.cpu_info()["override"]
    with pytest.raises(KeyError):
        with forced_isa(HOST_TIERS[0]):
            raise KeyError("inside")
    assert kt_kernel.cpu_info()["override"] == before


def parser(several: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmd")
    add_isa_argument(p, several=several)
    return p


def test_isa_option_sets_the_tier():
    p = parser(several=False)
    apply_isa_argument(p, p.parse_args(["--isa", HOST_TIERS[0]]))
    assert kt_kernel.cpu_info()["active_tier"] == HOST_TIERS[0]


def test_isa_option_error_is_a_usage_error(capsys):
    p = parser(several=False)
    with pytest.raises(SystemExit):
        apply_isa_argument(p, p.parse_args(["--isa", "sse9"]))
    assert "cmd: error: --isa sse9:" in capsys.readouterr().err


def test_isas_option_takes_a_list_and_isa_as_its_alias(capsys):
    p = parser(several=True)
    assert isas_argument(p, p.parse_args(["--isas", "all"])) == resolve_isas("all")
    assert isas_argument(p, p.parse_args(["--isa", HOST_TIERS[0]])) == HOST_TIERS[:1]
    assert isas_argument(p, p.parse_args([])) == resolve_isas(None)
    with pytest.raises(SystemExit):
        isas_argument(p, p.parse_args(["--isas", "sse9"]))
    assert "'sse9' is not a tier" in capsys.readouterr().err
