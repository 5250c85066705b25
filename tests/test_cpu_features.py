"""CPUs as feature sets: what detection reports, the tiers as named feature sets, and dispatch on
synthetic feature sets (CPUs this host is not) through _ext.dispatch_for_features, which runs the
selection functions every layer runs. Design: docs/cpu_features.md."""
from __future__ import annotations

import itertools

import pytest

import kt_kernel
from kt_kernel import _ext
from kt_kernel.formats import formats as method_formats

INFO = kt_kernel.cpu_info()
ALL_TIERS = list(_ext.all_tiers())
FEATURES = ["avx2", "avx_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
            "amx_tile_emu", "neon", "dotprod", "i8mm", "arm_bf16", "sve"]
# The two chains of tiers, each tier holding the features of the one before it: x86-64's and aarch64's.
X86_TIERS = ["generic", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"]
ARM_TIERS = ["generic", "neon", "neon_dotprod", "neon_i8mm", "neon_bf16", "sve"]
FORMAT_IDS = [f["name"] for f in _ext.formats()]  # every format, in FormatId order
# the GGUF block formats (mxfp4, whose method is MXFP4, among them): tests/test_gguf_formats.py
FORMAT_NAMES = [f["name"] for f in method_formats() if f["arrays"][0]["per"] != "block"]
# The AMX instructions of a row, besides its object's vector flags.
TILE_FEATURES = {"amx_tile", "amx_int8", "amx_bf16", "amx_tile_emu"}
KERNEL_ROWS = list(_ext.kernel_table())
EMULATED_ROWS = list(_ext.emulated_kernel_table())
# The CPUID flags behind each detected feature (the OS state aside).
FLAGS_OF = {"avx2": {"avx", "avx2", "fma", "f16c"}, "avx_vnni": {"avx_vnni"},
            "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"}, "avx512_vnni": {"avx512_vnni"},
            "avx512_bf16": {"avx512_bf16"}, "amx_tile": {"amx_tile"}, "amx_int8": {"amx_int8"},
            "amx_bf16": {"amx_bf16"}, "neon": {"asimd"}, "dotprod": {"asimddp"}, "i8mm": {"i8mm"},
            "arm_bf16": {"bf16"}, "sve": {"sve"}}


# dispatch among the x86 tiers' rows, which only an x86-64 build holds
X86_ROWS = pytest.mark.skipif(not any(r["name"].endswith("__avx2") for r in KERNEL_ROWS),
                              reason="the x86 tiers' kernels are built on x86-64 only")


def tier(name: str) -> set[str]:
    return set(_ext.tier_features(name))


def pick(fmt_name: str, *features: str) -> dict:
    return _ext.dispatch_for_features(fmt_name, sorted(set(features)))


def first_covered_row(fmt_name: str, have: set[str]) -> dict:
    """The rule, restated: the first row for the format, emulated rows first, whose features `have` holds."""
    for row in EMULATED_ROWS + KERNEL_ROWS:
        if row["format"] == fmt_name and set(row["features"]) <= have:
            return row
    raise AssertionError(f"no row for {fmt_name} on {sorted(have)}")


# ---- detection --------------------------------------------------------------------------------


def test_features_follow_their_cpuid_flags():
    """A feature is reported only with all its CPUID flags (the OS may still withhold the state);
    AMX features only with the permission granted ('usable')."""
    flags, features = set(INFO["flags"]), set(INFO["features"])
    assert features <= set(FEATURES) - {"amx_tile_emu"}, features
    for name in features:
        assert FLAGS_OF[name] <= flags, (name, flags)
    assert ("amx_tile" in features) == INFO["amx"].startswith("usable"), INFO["amx"]
    assert not (features & {"amx_int8", "amx_bf16"}) or "amx_tile" in features


def test_tiers_are_the_named_sets_the_cpu_covers():
    features = set(INFO["features"])
    assert INFO["tiers"] == [t for t in ALL_TIERS if tier(t) <= features]
    assert INFO["best_tier"] == INFO["tiers"][-1]
    assert tier("generic") == set()
    assert sorted(ALL_TIERS) == sorted(set(X86_TIERS + ARM_TIERS))
    for chain in X86_TIERS, ARM_TIERS:
        for lower, higher in zip(chain, chain[1:]):
            assert tier(lower) < tier(higher), (lower, higher)
    # no CPU covers a tier of both chains
    assert not set.union(*map(tier, X86_TIERS)) & set.union(*map(tier, ARM_TIERS))
    assert tier("amx") - tier("avx512_bf16") == {"amx_tile", "amx_int8", "amx_bf16"}
    assert tier("amx_emu") - tier("avx512_bf16") == {"amx_tile_emu", "amx_int8", "amx_bf16"}


def test_active_features_follow_the_override():
    kt_kernel.set_isa(None)
    info = kt_kernel.cpu_info()
    if info["override"]:  # the run was started under KT_KERNEL_ISA
        pytest.skip("KT_KERNEL_ISA is set")
    assert info["active_features"] == INFO["features"]
    for name in INFO["tiers"] + INFO["emulated_tiers"]:
        kt_kernel.set_isa(name)
        info = kt_kernel.cpu_info()
        assert (info["active_tier"], set(info["active_features"])) == (name, tier(name))
    kt_kernel.set_isa(None)


def test_unknown_feature_names_the_valid_ones():
    with pytest.raises(ValueError, match="avx1024.*" + ".*".join(FEATURES)):
        pick("bf16", "avx2", "avx1024")


# ---- dispatch on synthetic CPUs ---------------------------------------------------------------


@X86_ROWS
@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_avx_vnni_without_avx512_runs_the_avx2_rows(fmt_name):
    """A client CPU (AVX2 + AVX-VNNI, no AVX512): the avx2 rows and codec; no row needs avx_vnni."""
    got = pick(fmt_name, "avx2", "avx_vnni")
    assert got["kernel"].endswith("__avx2") and got["kernel"] == got["vector_kernel"], got
    assert got["act_codec"] == "act_8__avx2" and got["label"] == "avx2", got
    assert got == pick(fmt_name, "avx2")


@X86_ROWS
@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_avx512_without_vnni_runs_the_avx512_rows(fmt_name):
    """AVX512 with BF16 but no VNNI: the avx512 rows, bf16's too (its avx512bf16 object is
    compiled with -mavx512vnni, so its row needs avx512_vnni)."""
    got = pick(fmt_name, "avx2", "avx512", "avx512_bf16")
    assert got["kernel"].endswith("__avx512"), got
    assert got["act_codec"] == "act_16__avx512" and got["label"] == "avx512", got


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_avx512_without_avx2_runs_the_reference(fmt_name):
    """Features are not inferred from each other: every vector row needs avx2 (its flags' FMA/F16C)."""
    got = pick(fmt_name, "avx512", "avx512_vnni", "avx512_bf16")
    assert got["kernel"].endswith("__ref") and got["act_codec"] == "act_ref" and got["label"] == "generic", got


@X86_ROWS
@pytest.mark.parametrize("amx", ["amx_int8", "amx_bf16"])
def test_one_amx_dot_product_serves_only_its_formats(amx):
    """AMX-INT8 without AMX-BF16 runs the tile kernels for int8_pc/int4_g32 and avx512_bf16's for
    bf16; AMX-BF16 alone the reverse."""
    have = tier("avx512_bf16") | {"amx_tile", amx}
    tile_formats = {r["format"] for r in KERNEL_ROWS if amx in r["features"]}
    assert tile_formats == ({"int8_pc", "int4_g32", "int4_g32_zp"} if amx == "amx_int8" else {"bf16"})
    for fmt_name in FORMAT_NAMES:
        got = pick(fmt_name, *have)
        if fmt_name in tile_formats:
            assert got["kernel"].endswith("__amx") and got["vector_kernel"] != got["kernel"], got
            assert got["vector_kernel"] == pick(fmt_name, *tier("avx512_bf16"))["kernel"], got
        else:
            assert got == pick(fmt_name, *tier("avx512_bf16")), got
        assert got["label"] == "avx512_bf16"  # not the amx tier: it needs both dot products


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_amx_dot_products_without_tiles_run_no_tile_kernel(fmt_name):
    got = pick(fmt_name, *(tier("avx512_bf16") | {"amx_int8", "amx_bf16"}))
    assert got == pick(fmt_name, *tier("avx512_bf16"))


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_the_emulator_is_a_tile_backend_chosen_by_features(fmt_name):
    """amx_tile_emu stands in for amx_tile: the amx_emu set runs the emulated rows, never the
    hardware ones, and no set without it reaches an emulated row."""
    emu = pick(fmt_name, *tier("amx_emu"))
    hw = pick(fmt_name, *tier("amx"))
    assert emu["label"] == "amx_emu" and hw["label"] == "amx"
    if not any(r["format"] == fmt_name and "amx_tile" in r["features"] for r in KERNEL_ROWS):
        # a format without tile kernels runs its best vector row on both
        assert emu["kernel"] == hw["kernel"] == pick(fmt_name, *tier("avx512_bf16"))["kernel"], (emu, hw)
        return
    assert emu["kernel"] == hw["kernel"] + "_emu" and emu["vector_kernel"] == hw["vector_kernel"], (emu, hw)
    both = pick(fmt_name, *(tier("amx") | {"amx_tile_emu"}))
    assert both["kernel"].endswith("__amx_emu"), both  # the emulated table is searched first


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
def test_every_feature_set_picks_the_first_row_it_covers(fmt_name):
    """Every set of FEATURES: dispatch takes the first row (emulated table, then kernel table) whose
    features the set holds, and the paired vector kernel is the first such row with min_m 0."""
    for bits in itertools.product([False, True], repeat=len(FEATURES)):
        have = {f for f, on in zip(FEATURES, bits) if on}
        got = pick(fmt_name, *have)
        row = first_covered_row(fmt_name, have)
        vector = next(r for r in KERNEL_ROWS
                      if r["format"] == fmt_name and r["min_m"] == 0 and set(r["features"]) <= have)
        assert (got["kernel"], got["vector_kernel"]) == (row["name"], row["name"] if row["min_m"] == 0 else vector["name"]), have


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@pytest.mark.parametrize("tier_name", ALL_TIERS)
def test_tier_sets_pick_the_rows_of_their_tier(fmt_name, tier_name):
    """A tier's set picks the first row listed at or below that tier in its chain, on any host."""
    chain = ARM_TIERS if tier_name in ARM_TIERS else X86_TIERS
    below = chain[:chain.index(tier_name) + 1]
    row = next(r for r in KERNEL_ROWS if r["format"] == fmt_name and r["tier"] in below)
    assert pick(fmt_name, *tier(tier_name))["kernel"] == row["name"]


def test_rows_need_their_tiers_vector_features():
    """A row's features hold its listed tier's, but for the AMX dot product it does not call."""
    for row in KERNEL_ROWS + EMULATED_ROWS:
        listed = tier(row["tier"])
        if row["tier"] == "amx":
            listed -= TILE_FEATURES
            assert len(set(row["features"]) & TILE_FEATURES) == 2, row  # a tile backend + one dot product
        assert listed <= set(row["features"]), row


@pytest.mark.parametrize("name", INFO["tiers"] + INFO["emulated_tiers"])
def test_layers_dispatch_as_the_test_binding_does(moe, name):
    """The same selection functions: a layer built under a forced set runs what
    dispatch_for_features reports for that set (kernels, quantizer, activation codec)."""
    kt_kernel.set_isa(name)
    active = kt_kernel.cpu_info()["active_features"]
    for f in method_formats():
        layer = moe.layer(f["method"], moe.Shape(8, 2, 64, 32), cache=False, cpuinfer_threads=1)
        want = _ext.dispatch_for_features(f["name"], active)
        assert (layer.kernel_name, layer.vector_kernel_name, layer.isa_tier) == (
            want["kernel"], want["vector_kernel"], want["label"])
        assert (_ext.quantizer(f["name"]), _ext.act_codec()) == (want["quantizer"], want["act_codec"])


# The tables of the build before the kernel and format files registered their own rows (the lists
# of kernel_table.cpp): the sort of the registered rows (kernels/kernel_registry.h,
# kernel_table.cpp) must keep these rows, in this order, whatever order the linker placed them in.
# Rows added since may sit anywhere among them. (name, format, activation format, min_m, features)
RECORDED_KERNEL_TABLE = [
    ('gateup_int8pc_q8u_32x16__amx', 'int8_pc', 'q8u', 8, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8']),
    ('gateup_int4g32_q8s_32x16__amx', 'int4_g32', 'q8s', 24, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8']),
    ('gateup_bf16_bf16_32x16__amx', 'bf16', 'bf16', 2, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16']),
    ('gateup_bf16_bf16_8x16__avx512bf16', 'bf16', 'bf16', 0, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16']),
    ('gateup_int8pc_q8u_8x16__avx512vnni', 'int8_pc', 'q8u', 0, ['avx2', 'avx512', 'avx512_vnni']),
    ('gateup_int4g32_q8s_4x16__avx512vnni', 'int4_g32', 'q8s', 0, ['avx2', 'avx512', 'avx512_vnni']),
    ('gateup_bf16_f32_4x16__avx512', 'bf16', 'f32', 0, ['avx2', 'avx512']),
    ('gateup_int8pc_q8s_4x16__avx512', 'int8_pc', 'q8s', 0, ['avx2', 'avx512']),
    ('gateup_int4g32_q8s_4x16__avx512', 'int4_g32', 'q8s', 0, ['avx2', 'avx512']),
    ('gateup_bf16_f32_4x16__avx2', 'bf16', 'f32', 0, ['avx2']),
    ('gateup_int8pc_q8s_4x16__avx2', 'int8_pc', 'q8s', 0, ['avx2']),
    ('gateup_int4g32_q8s_4x16__avx2', 'int4_g32', 'q8s', 0, ['avx2']),
    ('gateup_bf16_f32_1x16__ref', 'bf16', 'f32', 0, []),
    ('gateup_int8pc_q8s_1x16__ref', 'int8_pc', 'q8s', 0, []),
    ('gateup_int4g32_q8s_1x16__ref', 'int4_g32', 'q8s', 0, []),
]
RECORDED_EMULATED_KERNEL_TABLE = [
    ('gateup_int8pc_q8u_32x16__amx_emu', 'int8_pc', 'q8u', 8, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_int8', 'amx_tile_emu']),
    ('gateup_int4g32_q8s_32x16__amx_emu', 'int4_g32', 'q8s', 24, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_int8', 'amx_tile_emu']),
    ('gateup_bf16_bf16_32x16__amx_emu', 'bf16', 'bf16', 2, ['avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_tile_emu']),
]
# (name, format, features)
RECORDED_QUANTIZER_TABLE = [
    ('quantize_int4g32_16g__avx512', 'int4_g32', ['avx2', 'avx512']),
    ('quantize_int8pc_16k__avx512', 'int8_pc', ['avx2', 'avx512']),
    ('quantize_int4g32_8g__avx2', 'int4_g32', ['avx2']),
    ('quantize_int8pc_8k__avx2', 'int8_pc', ['avx2']),
    ('bf16_quantize_ref', 'bf16', []),
    ('int8pc_quantize_ref', 'int8_pc', []),
    ('int4g32_quantize_ref', 'int4_g32', []),
]


def recorded_subsequence(rows: list[tuple], recorded: list[tuple]) -> list[tuple]:
    names = {row[0] for row in recorded}
    return [row for row in rows if row[0] in names]


@X86_ROWS
def test_tables_keep_the_recorded_rows_in_the_recorded_order():
    kernel_keys = ("name", "format", "act", "min_m", "features")
    for rows, recorded in [(_ext.kernel_table(), RECORDED_KERNEL_TABLE),
                           (_ext.emulated_kernel_table(), RECORDED_EMULATED_KERNEL_TABLE)]:
        assert recorded_subsequence([tuple(r[k] for k in kernel_keys) for r in rows], recorded) == recorded
    quantizers = [(r["name"], r["format"], r["features"]) for r in _ext.quantizer_table()]
    assert recorded_subsequence(quantizers, RECORDED_QUANTIZER_TABLE) == RECORDED_QUANTIZER_TABLE


def test_kernel_tables_are_sorted_by_the_stated_key():
    """kernel_table.cpp's order, restated: the higher tier, then more features, then the lower
    feature bits, then a tile row before a vector row, the format id, the name; names are unique,
    so no two rows tie."""
    def key(row):
        bits = sum(1 << FEATURES.index(f) for f in row["features"])
        return (-ALL_TIERS.index(row["tier"]), -len(row["features"]), bits, row["min_m"] == 0,
                FORMAT_IDS.index(row["format"]), row["name"])

    for rows in [KERNEL_ROWS, EMULATED_ROWS]:
        assert len({r["name"] for r in rows}) == len(rows)
        assert rows == sorted(rows, key=key)


def _proc_cpuinfo(key: str) -> int | None:
    """The first `key : value` of /proc/cpuinfo as an int, or None where it has none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return int(value.strip())
    except OSError:
        pass
    return None


def test_family_and_model_are_the_kernels():
    """CPUID leaf 1's display family and model, as Linux decodes them."""
    family, model = _proc_cpuinfo("cpu family"), _proc_cpuinfo("model")
    if family is None:
        pytest.skip("no x86 /proc/cpuinfo")
    assert (INFO["family"], INFO["model"]) == (family, model)


# ---- the weight stream's software prefetch (kt/cpu_features.h stream_prefetch) -----------------

_PREFETCH_PROBE = """
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import kt_kernel, gguf_reference as gr
from kt_kernel import _ext
print(kt_kernel.cpu_info()["stream_prefetch"])
E, K, H, I = 4, 2, 512, 1024
rng = np.random.default_rng(3)
out = []
def layers():
    for fmt in ("q4_K", "q5_K", "q6_K", "iq4_xs", "q8_0", "mxfp4"):
        blocks = [np.stack([gr.random_blocks(fmt, n, k, rng, scale=2.0**-6) for _ in range(E)])
                  for n, k in ((I, H), (I, H), (H, I))]
        layer = _ext.MoeLayer(_ext.Engine.shared(2, 1), E, K, H, I, "LLAMAFILE", [1] * E, 64, formats=[fmt, fmt])
        pmap = torch.arange(E)
        layer.load_quantized([[b.ctypes.data] for b in blocks], pmap.data_ptr(), E)
        yield layer
    for method in ("AMXINT4", "AMXINT8", "BF16"):  # the vector drivers' stream_ahead
        layer = _ext.MoeLayer(_ext.Engine.shared(2, 1), E, K, H, I, method, [1] * E, 64)
        w = [torch.randn(E, n, k, generator=torch.Generator().manual_seed(n + k)).bfloat16() * 0.05
             for n, k in ((I, H), (I, H), (H, I))]
        pmap = torch.arange(E)
        layer.load_from_tensors(*(t.data_ptr() for t in w), "bfloat16", pmap.data_ptr(), E)
        yield layer
for layer in layers():
    for M in (1, 3, 9):  # fused rows (GGUF), then the shared decode
        x = torch.randn(M, H, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(M))
        ids = torch.tensor([[m % E, (m + 1) % E] for m in range(M)], dtype=torch.int32)
        w = torch.full((M, K), 0.5)
        job, y = layer.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), False, w.data_ptr(), "float32", M)
        job.wait()
        out.append(bytes(y.view(np.int16)))
import hashlib
print(hashlib.sha256(b"".join(out)).hexdigest())
"""


def _prefetch_run(policy: str | None) -> tuple[str, str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "KT_KERNEL_PREFETCH"}
    if policy is not None:
        env["KT_KERNEL_PREFETCH"] = policy
    r = subprocess.run([sys.executable, "-c", _PREFETCH_PROBE, str(Path(__file__).parent)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    chosen, digest = r.stdout.split()
    return chosen, digest


def test_stream_prefetch_default_follows_the_cpu():
    """l1 (prefetcht0) on AMD family 1Ah, where it measured faster; l2 elsewhere."""
    if "KT_KERNEL_PREFETCH" in __import__("os").environ:
        pytest.skip("KT_KERNEL_PREFETCH is set in this environment")
    zen5 = INFO["vendor"] == "AuthenticAMD" and INFO["family"] >= 0x1A
    assert INFO["stream_prefetch"] == ("l1" if zen5 else "l2")


def test_stream_prefetch_changes_no_result():
    """The GGUF word-layout kernels and the vector drivers' decode under both policies (forced by
    KT_KERNEL_PREFETCH) give the same bits: a prefetch moves data, never a value."""
    if not {"avx512_vnni"} <= set(INFO["features"]):
        pytest.skip("the policy steers the AVX512-VNNI GGUF kernels only")
    (c1, d1), (c2, d2) = _prefetch_run("l1"), _prefetch_run("l2")
    assert (c1, c2) == ("l1", "l2")
    assert d1 == d2


def test_unknown_stream_prefetch_raises_at_construction():
    import os
    import subprocess
    import sys

    code = ("import kt_kernel\nfrom kt_kernel import KTMoEWrapper\n"
            "KTMoEWrapper(layer_idx=0, num_experts=4, num_experts_per_tok=2, hidden_size=256, "
            "moe_intermediate_size=256, num_gpu_experts=0, cpuinfer_threads=1, threadpool_count=1, "
            "weight_path=None, chunked_prefill_size=8, method='BF16')\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KT_KERNEL_PREFETCH": "l3"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "KT_KERNEL_PREFETCH='l3'" in r.stderr and "'l1' or 'l2'" in r.stderr, r.stderr[-2000:]
    assert "Traceback" in r.stderr  # a Python exception, not a crash
