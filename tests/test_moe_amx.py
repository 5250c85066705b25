"""The AMX tile kernels. On every host with the avx512_bf16 tier they run on the tile emulator (the
test-only "amx_emu" override: the same kernel templates with the software tile backend), which the
whole correctness matrix of test_moe_matrix.py / test_moe_edges.py also covers through the `tier`
fixture; on an AMX host the hardware kernels run too, and must give the emulator's results.
Here: bit-identity with the AVX512 kernels where the arithmetic is the same (int8_pc, int4_g32,
int4_g32_zp),
the per-bucket choice between tile and vector kernel at min_m, and that the emulated kernels are
never chosen automatically while the hardware ones are chosen exactly where AMX is permitted."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.formats import formats as method_formats

INFO = kt_kernel.cpu_info()
EMU_ROWS = {r["format"]: r for r in _ext.emulated_kernel_table()}
AMX_ROWS = {r["format"]: r for r in _ext.kernel_table() if r["tier"] == "amx"}
# methods whose format has a tile kernel (int4_g32_zp's, which no method names, run through the
# int4 release tests' amx_emu cases and the kernel-level tests below)
TILE_METHODS = [f["method"] for f in _ext.formats() if f["name"] in EMU_ROWS and f["method"]]
# integer dot products are exact and the epilogues are the AVX512 kernels' own: equal bits
BIT_IDENTICAL = {"AMXINT8", "AMXINT4"}
BIT_IDENTICAL_FORMATS = {"int8_pc", "int4_g32", "int4_g32_zp"}

needs_emu = pytest.mark.skipif("amx_emu" not in INFO["emulated_tiers"],
                               reason="amx_emu needs the avx512_bf16 tier (AVX512 epilogues)")

E, TOPK, H, I = 8, 3, 96, 80  # H = 64 + 32: int8/bf16 end in a partial K step; I splits 48 + 32


def min_m_of(moe, method) -> int:
    return EMU_ROWS[moe.format_of(method)["name"]]["min_m"]


def at_least(m: int, min_m: int, period: int = 32) -> int:
    """m raised by whole periods (32 rows: two A tiles) until a bucket of it runs the tile kernel:
    the same position in the 16-row tiles and 32-row blocks, at or above min_m."""
    return m + period * max(0, -(-(min_m - m) // period))


def vector_row(fmt_name: str) -> dict:
    """The vector kernel that serves buckets below min_m under amx_emu (the avx512_bf16 tier's)."""
    rank = _ext.all_tiers().index("avx512_bf16")
    return next(r for r in _ext.kernel_table() if r["format"] == fmt_name and r["min_m"] == 0
                and _ext.all_tiers().index(r["tier"]) <= rank)


def assert_same_bits(fmt_name, got, want, what):
    if fmt_name in BIT_IDENTICAL_FORMATS:
        diff = got.view(np.uint32) != want.view(np.uint32)
        assert not diff.any(), f"{what}: {int(diff.sum())} of {diff.size} fp32 values differ, first at {np.argwhere(diff)[0]}"
    else:  # bf16: fp32 sums of exact bf16 products in another order
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()), err_msg=what)


@needs_emu
@pytest.mark.parametrize("fmt_name", list(EMU_ROWS))
@pytest.mark.parametrize("m", [1, 5, 16, 17, 32, 33, 70], ids=lambda m: f"m{m}")
@pytest.mark.parametrize("n,k", [(16, 64), (48, 96), (40, 200)], ids=lambda v: str(v))
def test_tile_kernel_stages_against_the_vector_kernel(fmt_name, m, n, k):
    """Each stage of the tile kernel on its own (any m, also below min_m), in fp32 before the
    layer's bf16 output rounding could hide a last-bit difference: gate/up on scattered rows
    (repeats included), down accumulating into existing outputs through a token map."""
    tiles, vector = EMU_ROWS[fmt_name]["name"], vector_row(fmt_name)["name"]
    g = torch.Generator().manual_seed(1000 * m + n + k)
    gate, up = (torch.randn(n, k, generator=g) / k ** 0.5 for _ in range(2))
    down = torch.randn(72, n, generator=g) / n ** 0.5
    qg, qu, qd = (_ext.quantize(fmt_name, t.numpy()) for t in (gate, up, down))
    x = torch.randn(m + 7, k, generator=g).numpy()
    rows = torch.randint(0, m + 7, (m,), generator=g, dtype=torch.int32).numpy()
    h = _ext.kernel_gateup(vector, qg, qu, x, rows)
    assert_same_bits(fmt_name, _ext.kernel_gateup(tiles, qg, qu, x, rows), h, f"{tiles} gate/up")
    tok = torch.randint(0, m + 3, (m,), generator=g, dtype=torch.int32).numpy()
    weight = torch.rand(m, generator=g).numpy()
    out = torch.randn(m + 3, 80, generator=g).numpy()
    hn = np.ascontiguousarray(h[:, :n])
    assert_same_bits(fmt_name, _ext.kernel_down(tiles, qd, hn, tok, weight, out),
                     _ext.kernel_down(vector, qd, hn, tok, weight, out), f"{tiles} down")


def layer_pair(moe, method, shape, **kwargs):
    """The same weights on amx_emu and on avx512_bf16 (whose kernel is amx_emu's vector kernel)."""
    kt_kernel.set_isa("amx_emu")
    tiles = moe.layer(method, shape, **kwargs)
    kt_kernel.set_isa("avx512_bf16")
    vector = moe.layer(method, shape, **kwargs)
    kt_kernel.set_isa(None)
    assert tiles.isa_tier == "amx_emu" and tiles.kernel_name == EMU_ROWS[moe.format_of(method)["name"]]["name"]
    assert tiles.vector_kernel_name == vector.kernel_name
    return tiles, vector


def check_tiles_against_vector(moe, method, shape, tiles, vector, x, ids, w, **ref):
    out_tiles = tiles.forward(x, ids, w)
    out_vector = vector.forward(x, ids, w)
    if method in BIT_IDENTICAL:
        assert torch.equal(out_tiles, out_vector), (
            f"{method}: {tiles.kernel_name} differs from {vector.kernel_name} in "
            f"{int((out_tiles != out_vector).sum())} of {out_tiles.numel()} outputs")
    moe.check(tiles, shape, x, ids, w, out=out_tiles, **ref)


@needs_emu
@pytest.mark.parametrize("method", TILE_METHODS)
@pytest.mark.parametrize("load", [2, 6], ids=lambda f: f"{f}x_min_m")
@pytest.mark.parametrize("routing", ["nogpu", "gpu_count3", "gpu_mask_permuted"])
@pytest.mark.parametrize("threadpool_count", [1, 2], ids=["tp1", "tp2"])
def test_tile_kernels_match_vector_kernels(moe, method, load, routing, threadpool_count):
    """Buckets above min_m run the tile kernel; int8_pc/int4_g32 outputs equal the AVX512-VNNI
    layer's bit for bit, bf16 is checked against the reference (its tile accumulates in another order).
    M tokens give buckets of about `load` x min_m tokens (at least 64 and 200 tokens in all, so that
    buckets of every size mix)."""
    M = max(64 if load == 2 else 200, load * min_m_of(moe, method) * E // TOPK)
    kwargs = {"threadpool_count": threadpool_count}
    pmap = None
    if routing == "gpu_count3":
        kwargs["num_gpu_experts"] = 3
    elif routing == "gpu_mask_permuted":
        kwargs["gpu_experts_mask"] = (False, True, False, False, True, False, True, False)
        pmap = (5, 2, 7, 2, 0, 6, 1, 3)
    shape = moe.Shape(E, TOPK, H, I)
    tiles, vector = layer_pair(moe, method, shape, pmap=pmap, **kwargs)
    x, ids, w = moe.inputs(shape, M, seed=M)
    check_tiles_against_vector(moe, method, shape, tiles, vector, x, ids, w, pmap=pmap)
    assert tiles.kernel_name in tiles.last_kernels.values(), tiles.last_kernels


@needs_emu
@pytest.mark.parametrize("method", TILE_METHODS)
@pytest.mark.parametrize("m", [16, 17, 31, 32, 33, 50], ids=lambda m: f"m{m}")
@pytest.mark.parametrize("hidden,intermediate", [(64, 32), (200, 40)], ids=["H64I32", "H200I40"])
def test_tile_row_and_k_tails(moe, method, m, hidden, intermediate):
    """One expert takes all m tokens (raised by whole 32-row blocks to the format's min_m): full and
    partial 16-row A tiles and 32-row blocks, K in whole tile steps (64, 32) and not
    (200 = 3 x 64 + 8, 40)."""
    m = at_least(m, min_m_of(moe, method))
    shape = moe.Shape(4, 1, hidden, intermediate)
    tiles, vector = layer_pair(moe, method, shape)
    x, _, w = moe.inputs(shape, m, seed=m)
    ids = torch.full((m, 1), 2, dtype=torch.int64)
    check_tiles_against_vector(moe, method, shape, tiles, vector, x, ids, w)
    assert tiles.last_kernels == {2: tiles.kernel_name}


@needs_emu
@pytest.mark.parametrize("method", TILE_METHODS)
def test_min_m_picks_the_kernel_per_bucket(moe, method):
    """In one call: a bucket of exactly min_m tokens and one of 2 min_m - 1 run the tile kernel,
    buckets of min_m - 1 tokens and of 1 token the vector kernel."""
    min_m = min_m_of(moe, method)
    shape = moe.Shape(E, TOPK, H, I)
    tiles, vector = layer_pair(moe, method, shape)
    assert tiles.kernel_min_m == min_m > 1 and vector.kernel_min_m == 0
    assert tiles.kernel_description == (f"{tiles.kernel_name} from {min_m} tokens per expert, "
                                        f"{vector.kernel_name} below")
    # slot 0: min_m tokens; slot 1: min_m - 1; slot 3: both groups (2 min_m - 1); slot 5: 1 token
    ids = ([[0, 3, -1]] * min_m) + ([[1, 3, -1]] * (min_m - 1)) + [[5, -1, -1]]
    ids = torch.tensor(ids, dtype=torch.int64)
    x, _, w = moe.inputs(shape, ids.shape[0], seed=3)
    check_tiles_against_vector(moe, method, shape, tiles, vector, x, ids, w)
    assert tiles.last_kernels == {0: tiles.kernel_name, 1: vector.kernel_name,
                                  3: tiles.kernel_name, 5: vector.kernel_name}
    assert set(vector.last_kernels.values()) == {vector.kernel_name}


def test_emulated_kernels_are_not_in_the_dispatch_table():
    """The emulated rows live in their own table, one per hardware tile row (same format, act and
    min_m); dispatch (kernel_table) has no emulated row."""
    assert not [r for r in _ext.kernel_table() if r["name"].endswith("__amx_emu")]
    assert set(EMU_ROWS) == set(AMX_ROWS)
    for fmt, emu in EMU_ROWS.items():
        hw = AMX_ROWS[fmt]
        assert emu["name"] == hw["name"] + "_emu" and hw["name"].endswith("__amx")
        assert (emu["tier"], emu["act"], emu["min_m"]) == (hw["tier"], hw["act"], hw["min_m"])
        assert hw["min_m"] > 0
    for r in _ext.kernel_table():
        assert (r["min_m"] > 0) == (r["tier"] == "amx"), r


def run_python(code: str, tmp_path: pathlib.Path, **env) -> subprocess.CompletedProcess:
    pkg_root = str(pathlib.Path(kt_kernel.__file__).resolve().parent.parent)
    full = {k: v for k, v in os.environ.items() if k != "KT_KERNEL_ISA"}  # no override unless given
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in full.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120)


LAYER_KERNELS = """
    import kt_kernel
    info = kt_kernel.cpu_info()
    print(info["active_tier"], info["best_tier"])
    for method in ("AMXINT8", "AMXINT4", "BF16"):
        w = kt_kernel.KTMoEWrapper(0, 8, 2, 64, 32, cpuinfer_threads=1, method=method)
        print(method, w.isa_tier, w.kernel_name, w.vector_kernel_name)
"""


def test_amx_tier_chosen_exactly_where_amx_is_permitted(moe):
    """With no override, a layer runs the hardware tile kernels (__amx) where AMX is permitted and
    never otherwise, and never the emulated ones."""
    kt_kernel.set_isa(None)
    best = INFO["best_tier"]
    assert kt_kernel.cpu_info()["active_tier"] == best and ("amx" in INFO["tiers"]) == (best == "amx")
    for f in method_formats():
        layer = moe.layer(f["method"], moe.Shape(8, 2, 64, 32), cache=False, cpuinfer_threads=1)
        kernel, vector_kernel = layer.kernel_name, layer.vector_kernel_name
        assert layer.isa_tier == best and not kernel.endswith("__amx_emu"), kernel
        if best == "amx" and f["name"] in AMX_ROWS:
            assert kernel == AMX_ROWS[f["name"]]["name"] and not vector_kernel.endswith("__amx"), kernel
        else:
            assert not kernel.endswith("__amx") and kernel == vector_kernel, kernel


@needs_emu
def test_env_selects_amx_emu(tmp_path):
    """KT_KERNEL_ISA=amx_emu at start-up: every layer is on amx_emu, tile formats run the emulated
    kernels with the avx512 vector kernels below min_m."""
    r = run_python(LAYER_KERNELS, tmp_path, KT_KERNEL_ISA="amx_emu")
    assert r.returncode == 0, r.stderr
    lines = list(filter(None, r.stdout.split("\n")))
    assert lines[0].split()[0] == "amx_emu"
    for line in lines[1:]:
        method, tier, kernel, vector_kernel = line.split()
        fmt = next(f["name"] for f in method_formats() if f["method"] == method)
        assert tier == "amx_emu", line
        if fmt in EMU_ROWS:
            assert kernel == EMU_ROWS[fmt]["name"] and vector_kernel.endswith(("__avx512vnni", "__avx512bf16")), line


@needs_emu
def test_set_isa_amx_emu_reports_and_clears():
    kt_kernel.set_isa("amx_emu")
    info = kt_kernel.cpu_info()
    assert (info["override"], info["active_tier"]) == ("amx_emu", "amx_emu")
    assert info["best_tier"] == INFO["best_tier"] and "amx_emu" not in info["tiers"]
    kt_kernel.set_isa(None)
    assert kt_kernel.cpu_info()["active_tier"] == INFO["best_tier"]


@needs_emu
@pytest.mark.skipif("amx" not in INFO["tiers"], reason="no AMX on this host: the tile kernels run only on the emulator")
@pytest.mark.parametrize("method", TILE_METHODS)
def test_amx_hardware_matches_the_emulator(moe, method):
    """On an AMX host: the hardware tile kernels give the emulator's bits (int8/int4 exactly; bf16
    within the reference tolerance, in case the hardware orders a pair's two products otherwise)."""
    shape = moe.Shape(E, TOPK, H, I)
    kt_kernel.set_isa("amx")
    hw = moe.layer(method, shape)
    kt_kernel.set_isa("amx_emu")
    emu = moe.layer(method, shape)
    kt_kernel.set_isa(None)
    x, ids, w = moe.inputs(shape, 200, seed=11)
    out_hw, out_emu = hw.forward(x, ids, w), emu.forward(x, ids, w)
    assert hw.kernel_name in hw.last_kernels.values()
    if method in BIT_IDENTICAL:
        assert torch.equal(out_hw, out_emu)
    else:
        moe.assert_close_dequant(out_hw, out_emu, moe.format_of(method)["name"], what=method, rtol=2 * moe.OUTPUT_RTOL)
