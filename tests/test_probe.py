"""The machine-limit probe (kt_kernel._ext.probe_*) and `python -m kt_kernel.doctor`.

Timing thresholds are physical bounds only, far from any figure a shared, noisy machine gives: the
clock estimate lies in 0.5..7 GHz, the tile families beat their vector family and stay under the
tile unit's throughput at that clock. What is checked exactly: which families are available (from
the CPU's tiers and the active tier), the thread count, the doctor's sections, and the prediction
arithmetic.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import kt_kernel
from kt_kernel import _ext, roofline

HOST_TIERS = kt_kernel.cpu_info()["tiers"]
ALL_TIERS = list(_ext.all_tiers())
# family -> the tier it needs (and the probe must agree with this table).
FAMILY_TIER = {
    "fp32_fma_ymm": "avx2",
    "fp32_fma_zmm": "avx512",
    "bf16_dpbf16ps_zmm": "avx512_bf16",
    "bf16_tdpbf16ps_tmm": "amx",
    "int8_pmaddubsw_ymm": "avx2",
    "int8_pmaddubsw_zmm": "avx512",
    "int8_vpdpbusd_zmm": "avx512_vnni",
    "int8_tdpbusd_tmm": "amx",
}
# tile family -> (ops of one instruction, the vector family of the tier below it)
TILE_FAMILIES = {
    "int8_tdpbusd_tmm": (2 * 16 * 16 * 64, "int8_vpdpbusd_zmm"),
    "bf16_tdpbf16ps_tmm": (2 * 16 * 16 * 32, "bf16_dpbf16ps_zmm"),
}
needs_amx = pytest.mark.skipif("amx" not in HOST_TIERS, reason="the tile families run only at the amx tier")


def positive_finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture
def isa(request):
    """Set an ISA override for one test, cleared afterwards."""
    yield kt_kernel.set_isa
    kt_kernel.set_isa(None)


# ---- bandwidth ----------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bandwidth_positive_and_threads(threads):
    b = _ext.probe_bandwidth(threads, 32, 3, pin=False)
    assert b["threads"] == threads
    assert len(set(b["thread_ids"])) == threads, b["thread_ids"]  # that many distinct OS threads ran
    assert b["pinned"] is False and b["cpus"] == []
    assert len(b["gbps"]) == 3 and all(positive_finite(g) for g in b["gbps"])
    assert b["best_gbps"] == max(b["gbps"])
    assert min(b["gbps"]) <= b["median_gbps"] <= b["best_gbps"]
    assert 0 < b["bytes"] <= 32 * 2**20 + 2 * 2**20


def test_bandwidth_pinned_reports_cpus():
    b = _ext.probe_bandwidth(2, 16, 2, pin=True)
    allowed = sorted(os.sched_getaffinity(0))
    assert b["pinned"] is True
    assert b["cpus"] == [allowed[i % len(allowed)] for i in range(2)]
    assert positive_finite(b["best_gbps"])


@pytest.mark.parametrize("threads", [1, len(os.sched_getaffinity(0)), len(os.sched_getaffinity(0)) + 1])
def test_pinning_follows_the_engine_by_default(threads, monkeypatch):
    """Like kt/engine.h: one thread per allowed CPU when threads <= CPUs, unless KT_KERNEL_PIN_THREADS=0."""
    allowed = sorted(os.sched_getaffinity(0))
    monkeypatch.delenv("KT_KERNEL_PIN_THREADS", raising=False)
    b = _ext.probe_bandwidth(threads, 8, 1)
    p = _ext.probe_peaks(threads, 0.01, families=[next(iter(_ext.probe_families()))])
    for r in (b, p):
        assert r["pinned"] is (threads <= len(allowed))
        assert r["cpus"] == (allowed[:threads] if threads <= len(allowed) else [])
    monkeypatch.setenv("KT_KERNEL_PIN_THREADS", "0")
    assert _ext.probe_bandwidth(1, 8, 1)["pinned"] is False


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_bandwidth_loads_follow_active_tier(tier, isa):
    isa(tier)
    b = _ext.probe_bandwidth(1, 8, 1)
    want = "zmm" if ALL_TIERS.index(tier) >= ALL_TIERS.index("avx512") else \
        "ymm" if tier == "avx2" else "64-bit scalar"
    assert b["loads"].startswith(want), (tier, b["loads"])
    assert positive_finite(b["best_gbps"])


@pytest.mark.parametrize("kwargs", [dict(threads=0, mib=8, repeats=1), dict(threads=1, mib=0, repeats=1),
                                    dict(threads=1, mib=8, repeats=0)], ids=["threads0", "mib0", "repeats0"])
def test_bandwidth_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(k for k, v in kwargs.items() if v == 0)):
        _ext.probe_bandwidth(**kwargs)


# ---- peaks --------------------------------------------------------------------------------------

def test_family_table_matches():
    fams = _ext.probe_families()
    assert set(fams) == set(FAMILY_TIER)
    for name, f in fams.items():
        assert f["isa"] == FAMILY_TIER[name]


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_peaks_available_exactly_where_the_tier_allows(tier, isa):
    """Families at or below the active tier are measured (positive, finite); the others say
    'not available' and carry no number."""
    isa(tier)
    p = _ext.probe_peaks(2, 0.05)
    assert p["tier"] == tier and p["threads"] == 2
    assert len(set(p["thread_ids"])) == 2
    assert set(p["families"]) == set(FAMILY_TIER)
    for name, f in p["families"].items():
        expected = ALL_TIERS.index(FAMILY_TIER[name]) <= ALL_TIERS.index(tier)
        assert f["available"] is expected, (name, tier, f)
        if expected:
            assert positive_finite(f["best"]) and positive_finite(f["median"]), f
            assert len(f["rates"]) >= 3 and all(positive_finite(r) for r in f["rates"])
            assert f["median"] <= f["best"]
        else:
            assert f["best"] is None and f["median"] is None
            assert f["reason"].startswith("not available"), f["reason"]
            assert FAMILY_TIER[name] in f["reason"]


def test_peaks_families_above_the_cpu_say_so():
    best = kt_kernel.cpu_info()["best_tier"]
    fams = _ext.probe_families()
    for name, tier in FAMILY_TIER.items():
        if ALL_TIERS.index(tier) > ALL_TIERS.index(best):
            assert not fams[name]["available"]
            assert "this CPU's best tier is " + best in fams[name]["reason"]


@pytest.mark.parametrize("name", TILE_FAMILIES)
def test_tile_families_listed(name):
    f = _ext.probe_families()[name]
    assert f["isa"] == "amx" and f["accumulators"] == 4
    assert f["ops_per_instruction"] == TILE_FAMILIES[name][0]
    assert f["unit"] == ("GOP/s" if name.startswith("int8") else "GFLOP/s")
    assert f["available"] is (kt_kernel.cpu_info()["active_tier"] == "amx"), f


@pytest.mark.skipif("amx_emu" not in kt_kernel.cpu_info()["emulated_tiers"], reason="amx_emu needs avx512_bf16")
def test_tile_families_not_run_under_amx_emu(isa):
    """The emulator override runs the tile kernels in software: the tile families' hardware
    instructions must not run (on a CPU without AMX they would fault)."""
    isa("amx_emu")
    p = _ext.probe_peaks(1, 0.02, families=list(TILE_FAMILIES))
    for name in TILE_FAMILIES:
        f = p["families"][name]
        assert not f["available"] and f["best"] is None, f
        # the reason names what is missing: the override where the CPU has AMX, the CPU where not
        missing = "amx_emu" if "amx" in HOST_TIERS else "this CPU's best tier is"
        assert missing in f["reason"] and "needs amx" in f["reason"], f["reason"]


@needs_amx
@pytest.mark.parametrize("name", TILE_FAMILIES)
def test_tile_peak_plausible(name, isa):
    """Measured on 2 threads: above twice the vector family's peak measured alongside (AMX does 8x
    its MACs per cycle on Sapphire Rapids), and at most one tile instruction per 16 cycles per
    thread (the tile unit's documented throughput), +25%, at the clock estimate."""
    isa("amx")
    ops, vector = TILE_FAMILIES[name]
    p = _ext.probe_peaks(2, 0.2, families=[name, vector])["families"]
    tile, vec = p[name]["best"], p[vector]["best"]
    assert positive_finite(tile) and tile > 2 * vec, (name, tile, vector, vec)
    clock = _ext.probe_clock_ghz(0.05)
    per_cycle = tile / (2 * clock)
    assert per_cycle <= 1.25 * ops / 16, f"{name}: {per_cycle:.0f} ops/cycle/thread at {clock:.2f} GHz"


@pytest.mark.parametrize("threads", [1, 3])
def test_peaks_thread_count_and_filter(threads):
    # at the generic tier (KT_KERNEL_ISA=generic) no family is available: the filter still holds
    fams = _ext.probe_families()
    name = next((n for n, f in fams.items() if f["available"]), next(iter(fams)))
    p = _ext.probe_peaks(threads, 0.05, families=[name])
    assert p["threads"] == threads and len(set(p["thread_ids"])) == threads
    assert list(p["families"]) == [name]
    if fams[name]["available"]:
        assert positive_finite(p["families"][name]["best"])
    else:
        assert p["families"][name]["best"] is None and "not available" in p["families"][name]["reason"]


def test_peaks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="threads=0"):
        _ext.probe_peaks(0, 0.05)
    with pytest.raises(ValueError, match="seconds"):
        _ext.probe_peaks(1, 0.0)
    with pytest.raises(ValueError, match="unknown probe family 'fp64'.*fp32_fma_ymm"):
        _ext.probe_peaks(1, 0.05, families=["fp64"])


def test_clock_estimate_plausible():
    """One dependent add per cycle: within any x86-64 core's clock range. (An add-immediate chain
    read 20-23 GHz on a Xeon whose renamer folds those adds.)"""
    ghz = _ext.probe_clock_ghz(0.02)
    assert positive_finite(ghz) and 0.5 <= ghz <= 7.0, ghz


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_peak_family_per_method(tier, isa):
    isa(tier)
    at = ALL_TIERS.index(tier)
    want_int = ("int8_tdpbusd_tmm" if at >= ALL_TIERS.index("amx") else
                "int8_vpdpbusd_zmm" if at >= ALL_TIERS.index("avx512_vnni") else
                "int8_pmaddubsw_zmm" if at >= ALL_TIERS.index("avx512") else
                "int8_pmaddubsw_ymm" if at >= ALL_TIERS.index("avx2") else None)
    want_bf16 = ("bf16_tdpbf16ps_tmm" if at >= ALL_TIERS.index("amx") else
                 "bf16_dpbf16ps_zmm" if at >= ALL_TIERS.index("avx512_bf16") else
                 "fp32_fma_zmm" if at >= ALL_TIERS.index("avx512") else
                 "fp32_fma_ymm" if at >= ALL_TIERS.index("avx2") else None)
    assert roofline.peak_family("AMXINT4") == want_int
    assert roofline.peak_family("AMXINT8") == want_int
    assert roofline.peak_family("BF16") == want_bf16
    # LLAMAFILE's formats are a GGUF file's: the caller says whether its kernels multiply integers
    assert roofline.peak_family("LLAMAFILE", int_dot=True) == want_int
    assert roofline.peak_family("LLAMAFILE", int_dot=False) == want_bf16


# ---- prediction arithmetic ------------------------------------------------------------------------

def test_prediction_hand_computed():
    # Qwen3-30B-A3B, int4_g32 (5 bits/weight) at 40 GB/s:
    # per token 48 layers x 8 experts x 3 x 2048 x 768 weights x 0.625 bytes = 1,132,462,080 bytes
    # -> 40e9 / 1,132,462,080 = 35.32127 tokens/s.
    s = roofline.PRESETS["qwen3-30b-a3b"]
    assert roofline.bytes_per_weight("AMXINT4") == 0.625
    assert roofline.bytes_per_token(s, 0.625) == 1_132_462_080
    assert roofline.predict_decode_tok_s(s, 0.625, 40.0) == pytest.approx(35.321271, rel=1e-6)
    # Mixtral-8x7B bf16 at 50 GB/s: 32 x 2 x 3 x 4096 x 14336 x 2 = 22,548,578,304 bytes -> 2.21743 tok/s.
    m = roofline.PRESETS["mixtral-8x7b"]
    assert roofline.bytes_per_token(m, 2.0) == 22_548_578_304
    assert roofline.predict_decode_tok_s(m, 2.0, 50.0) == pytest.approx(2.217435, rel=1e-6)


def test_presets_match_protocol():
    p = roofline.PRESETS
    assert (p["qwen3-30b-a3b"].moe_layers, p["qwen3-30b-a3b"].hidden, p["qwen3-30b-a3b"].intermediate,
            p["qwen3-30b-a3b"].experts_per_token) == (48, 2048, 768, 8)
    assert (p["deepseek-v3"].moe_layers, p["deepseek-v3"].hidden, p["deepseek-v3"].intermediate,
            p["deepseek-v3"].experts_per_token) == (58, 7168, 2048, 8)
    assert (p["mixtral-8x7b"].moe_layers, p["mixtral-8x7b"].hidden, p["mixtral-8x7b"].intermediate,
            p["mixtral-8x7b"].experts_per_token) == (32, 4096, 14336, 2)


def test_shape_from_hf_configs():
    ds = {"model_type": "deepseek_v3", "hidden_size": 7168, "moe_intermediate_size": 2048, "intermediate_size": 18432,
          "num_experts_per_tok": 8, "num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
          "n_routed_experts": 256}
    s = roofline.shape_from_hf_config(ds)
    assert (s.moe_layers, s.hidden, s.intermediate, s.experts_per_token, s.experts) == (58, 7168, 2048, 8, 256)
    qw = {"model_type": "qwen3_moe", "hidden_size": 2048, "moe_intermediate_size": 768, "num_experts_per_tok": 8,
          "num_hidden_layers": 48, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_experts": 128}
    assert roofline.shape_from_hf_config(qw) == roofline.ModelShape("qwen3_moe", 48, 2048, 768, 8, 128)
    mx = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_experts_per_tok": 2,
          "num_hidden_layers": 32, "num_local_experts": 8}
    assert roofline.shape_from_hf_config(mx).moe_layers == 32
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        roofline.shape_from_hf_config({"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2})


# ---- the doctor, as a user runs it ----------------------------------------------------------------

def run_doctor(*args: str) -> subprocess.CompletedProcess:
    # -P: the source tree (which has no _ext) must not shadow the installed package.
    return subprocess.run([sys.executable, "-P", "-m", "kt_kernel.doctor", "--threads", "2", "--seconds", "0.05",
                           "--mib", "32", "--repeats", "2", *args],
                          capture_output=True, text=True, timeout=300)


def test_doctor_prints_its_sections(tmp_path):
    out_json = tmp_path / "doctor.json"
    r = run_doctor("--json", str(out_json))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for section in ("== CPU ==", "== ISA tier ==", "== Read bandwidth ==", "== Instruction peaks",
                    "== Predicted decode tokens/s (UPPER BOUND"):
        assert section in out, out
    info = kt_kernel.cpu_info()
    assert info["brand"] in out and f"kt_kernel uses: {info['active_tier']}" in out and info["amx"] in out
    for name in ("Qwen3-30B-A3B", "DeepSeek-V3 / Kimi-K2", "Mixtral-8x7B"):
        assert name in out
    for name, f in _ext.probe_families().items():
        assert name in out
    d = json.loads(out_json.read_text())
    assert d["threads"] == 2
    assert {p["method"] for p in d["predictions"]} == set(kt_kernel.METHODS)
    assert all(positive_finite(p["tok_s_upper_bound"]) for p in d["predictions"])


def test_doctor_custom_shape_and_config(tmp_path):
    r = run_doctor("--hidden", "1024", "--intermediate", "512", "--experts-per-token", "4", "--moe-layers", "10")
    assert r.returncode == 0, r.stderr
    assert "custom: 10 MoE layers, H=1024, I=512, top-4" in r.stdout
    cfg = tmp_path / "m" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                               "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_local_experts": 8}))
    r = run_doctor("--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "mixtral: 32 MoE layers, H=4096, I=14336, top-2 of 8 experts" in r.stdout
    r = run_doctor("--hidden", "1024")
    assert r.returncode != 0 and "--intermediate" in r.stderr
