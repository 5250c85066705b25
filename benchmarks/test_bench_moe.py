"""pytest-benchmark suite: the protocol cases of bench_moe.py, with correctness asserted.

    pytest benchmarks/test_bench_moe.py --benchmark-disable   # smoke test, each case once (CI runs all of benchmarks/)
    pytest benchmarks/test_bench_moe.py --bench-shapes A --bench-tokens 1,8,512   # time the protocol's
    pytest benchmarks/test_bench_moe.py --bench-shapes A,B,C --bench-isas avx512_bf16 --benchmark-save=main

Cases: shape x ISA tier x method x M (benchmarks/conftest.py: --bench-shapes, default the small S;
--bench-tokens, default 1,8,64; --bench-isas, default every tier this CPU runs but generic, each
forced while its wrappers are built). Every timed case also checks its output against the fp32
torch reference on the same weights, with the per-method bound of kt_kernel.accuracy.REL_ERR_BOUNDS.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import re
import sys

import pytest
import torch
import torch.nn.functional as F

import kt_kernel
from kt_kernel import KTMoEWrapper
from kt_kernel.accuracy import REL_ERR_BOUNDS, relative_error
from kt_kernel.cpu import forced_isa
from kt_kernel.isa_option import resolve_isas
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.threads import torch_threads
from kt_kernel.torch_moe import TORCH_PEER, moe_forward

import bench_moe
import bench_report
from shapes import SMALL_SHAPES, get_shape

THREADS = bench_moe.all_cores()


@pytest.fixture(scope="module", autouse=True)
def _torch_threads():
    with torch_threads(THREADS):
        yield


@pytest.fixture(scope="module")
def weights(shape):
    return random_expert_weights(shape.E, shape.H, shape.I, seed=0)


@pytest.fixture(scope="module")
def cases(request, shape, weights):
    """Per M: x, topk_ids, topk_weights and the fp32 reference output."""
    return bench_moe.protocol_cases(shape, weights, request.config.bench_tokens)


@pytest.fixture(scope="module")
def wrapper(shape, weights, method, tier):
    """A loaded KTMoEWrapper built at `tier` (a layer fixes its kernels when it is built); the tier
    in force before is back once it is built."""
    with forced_isa(tier):
        w = KTMoEWrapper(layer_idx=0, num_experts=shape.E, num_experts_per_tok=shape.K, hidden_size=shape.H,
                         moe_intermediate_size=shape.I, cpuinfer_threads=THREADS, threadpool_count=1, method=method)
    w.load_weights_from_tensors(*weights)
    assert w.isa_tier == tier
    yield w
    del w  # before the next wrapper is built: shape C's take gigabytes
    gc.collect()


def case_info(shape, ids, method: str, M: int) -> dict:
    """What turns a time into the protocol's rates: bytes of the distinct experts touched, ops."""
    bpw = 2.0 if method == TORCH_PEER else bench_moe.bytes_per_weight(method)
    m = bench_moe.case_metrics(shape, M, ids, bpw, 1.0)
    return {k: m[k] for k in ("distinct_experts", "weight_bytes_touched", "ops")}


def test_kt_moe(benchmark, shape, wrapper, cases, M):
    x, ids, w, ref = cases[M]
    benchmark.group = f"{shape.name} M={M}"
    benchmark.extra_info.update(shape=shape.name, method=wrapper.method, tier=wrapper.isa_tier,
                                kernel=wrapper.kernel_name, M=M, **case_info(shape, ids, wrapper.method, M))
    out = benchmark(wrapper.forward, x, ids, w)
    assert out.shape == (M, shape.H) and out.dtype == torch.bfloat16
    err = relative_error(out, ref)
    bound = REL_ERR_BOUNDS[wrapper.method]
    assert err < bound, (f"{wrapper.method} ({wrapper.kernel_name}, {wrapper.isa_tier}) on {shape.name} at M={M}: "
                         f"relative error {err:.4f} against the fp32 reference, bound {bound}")


def test_torch_peer(benchmark, shape, weights, cases, M):
    x, ids, w, ref = cases[M]
    benchmark.group = f"{shape.name} M={M}"
    benchmark.extra_info.update(shape=shape.name, method=TORCH_PEER, M=M, **case_info(shape, ids, TORCH_PEER, M))
    out = benchmark(moe_forward, x, ids, w, *weights)
    err = relative_error(out, ref)
    assert err < REL_ERR_BOUNDS[TORCH_PEER], f"{TORCH_PEER} on {shape.name} at M={M}: relative error {err:.4f}"


def test_reference_matches_token_loop():
    """The grouped reference equals the formula computed token by token, -1 slots skipped."""
    E, H, I, K, M = 6, 64, 32, 3, 5
    gate, up, down = random_expert_weights(E, H, I, seed=1, dtype=torch.float32)
    x, ids, w = random_inputs(M, H, E, K, seed=1)
    ids[1, 2] = -1
    ids[3, :] = -1
    got = moe_forward(x, ids, w, gate, up, down, out_dtype=torch.float32)
    want = torch.zeros(M, H)
    for t in range(M):
        xt = x[t].float()
        for k in range(K):
            e = int(ids[t, k])
            if e >= 0:
                want[t] += w[t, k] * (down[e] @ (F.silu(gate[e] @ xt) * (up[e] @ xt)))
    assert torch.equal(got[3], torch.zeros(H))
    assert relative_error(got, want) < 1e-5


def test_routing_is_distinct_and_seeded():
    x, ids, w = random_inputs(64, 16, 32, 8, seed=0)
    assert all(len(set(row.tolist())) == 8 for row in ids)
    assert torch.allclose(w.sum(1), torch.ones(64))
    # Row t does not depend on M: protocol_cases slices the inputs of every M from the largest.
    for got, want in zip(random_inputs(8, 16, 32, 8, seed=0), (x, ids, w)):
        assert torch.equal(got, want[:8])


def test_protocol_cases_slice_one_reference():
    """Each M's reference (sliced from the largest M's) equals the one computed for M alone."""
    shape = SMALL_SHAPES["S"]
    weights = random_expert_weights(shape.E, shape.H, shape.I, seed=0)
    cases = bench_moe.protocol_cases(shape, weights, [1, 8])
    x, ids, w = random_inputs(1, shape.H, shape.E, shape.K, seed=0)
    ref = moe_forward(x, ids, w, *weights, compute_dtype=torch.float32, out_dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(cases[1][:3], (x, ids, w)))
    assert relative_error(cases[1][3], ref) < 1e-6


# ---- the command line, its JSON, Markdown and chart ----------------------------------------------

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """bench_moe.py end to end on the small shape over every tier, decode and prefill, with its
    JSON and Markdown (and the chart where matplotlib is installed)."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "out.json", "markdown": out / "out.md", "chart": out / "out.png"}
    argv = ["--shapes", "S", "--tokens", "1,64", "--isas", "all", "--iters", "2", "--min-time", "0",
            "--warmup", "1", "--bw-mib", "16", "--peak-seconds", "0.02", "--load-seconds", "0.05",
            "--json", str(paths["json"]), "--markdown", str(paths["markdown"])]
    if has_matplotlib():
        argv += ["--chart", str(paths["chart"])]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        bench_moe.main(argv)
    return text.getvalue(), json.loads(paths["json"].read_text()), paths


def has_matplotlib() -> bool:
    try:
        bench_report.require_matplotlib()
    except ImportError:
        return False
    return True


def test_cli_every_tier(cli_run):
    """Table printed, a row per (method, tier, M) plus the PyTorch peer, errors in bounds, limits of
    the row's tier."""
    text, result, _ = cli_run
    tiers = resolve_isas("all")
    assert "instruction peaks" in text and TORCH_PEER in text
    rows = result["results"]
    assert result["conditions"]["isas"] == tiers
    assert {(r["method"], r["tier"]) for r in rows if r["method"] != TORCH_PEER} == \
        {(m, t) for m in kt_kernel.METHODS for t in tiers}
    assert len(rows) == 2 * (1 + len(kt_kernel.METHODS) * len(tiers))
    for r in rows:
        assert r["ms"] > 0 and r["rel_err"] < REL_ERR_BOUNDS[r["method"]], r
        if r["M"] == 1:  # decode: held to the higher of the readings before and after it
            limit = max(r["bandwidth_gbps"], r["bandwidth_after_gbps"])
            assert r["pct_bandwidth"] == pytest.approx(100 * r["gbps"] / limit), r
            assert r["regime_switch"] == (abs(r["bandwidth_gbps"] - r["bandwidth_after_gbps"]) > 0.15 * limit)
        if r["M"] == 1:
            assert r["pct_roofline"] is None, r
        else:  # prefill: the roofline against the block's bandwidth reading and peak
            assert r["intensity"] == pytest.approx(r["ops"] / r["weight_bytes_touched"]), r
            if r["peak"]["gops"] is None:  # generic tier
                assert r["pct_roofline"] is None and r["roof_bound"] is None, r
            else:
                memory = r["bandwidth_gbps"] * r["intensity"]
                assert r["attainable_gops"] == pytest.approx(min(r["peak"]["gops"], memory)), r
                assert r["roof_bound"] == ("memory" if memory < r["peak"]["gops"] else "compute"), r
                assert r["pct_roofline"] == pytest.approx(100 * r["gops"] / r["attainable_gops"]), r
                assert r["pct_roofline"] >= r["pct_peak"] - 1e-9, r
        if r["method"] != TORCH_PEER:
            with forced_isa(r["tier"]):
                assert r["peak"]["family"] == bench_moe.peak_family(r["method"]), r
    assert kt_kernel.cpu_info()["override"] == (result["conditions"]["isa_override"] or "")  # restored
    header = next(line for line in text.splitlines() if line.startswith("method "))
    assert "%lim" in header and "%roof" in header
    assert "%roof of the roofline: attainable = min(peak, read bandwidth x intensity)" in text


def test_roofline_hand_computed():
    """Shape A, AMXINT8 (8 bits/weight), M=512, every expert touched: 128 x 3HI = 603,979,776
    bytes streamed per call for 2 x 3HI x 512 x 8 = 38,654,705,664 ops, 64 ops per byte; at 31 GB/s
    the memory roof is 1984 GOP/s, under a 7000 GOP/s tile peak: memory-bound."""
    shape = get_shape("A")
    ids = torch.arange(512 * 8).remainder(128).reshape(512, 8)
    m = bench_moe.case_metrics(shape, 512, ids, bench_moe.bytes_per_weight("AMXINT8"), 1.0)
    assert (m["distinct_experts"], m["weight_bytes_touched"], m["ops"]) == (128, 603_979_776, 38_654_705_664)
    r = bench_moe.roofline(m["ops"], m["weight_bytes_touched"], 31.0, 7000.0)
    assert r == {"intensity": 64.0, "attainable_gops": 1984.0, "roof_bound": "memory"}
    r = bench_moe.roofline(m["ops"], m["weight_bytes_touched"], 31.0, 900.0)
    assert r == {"intensity": 64.0, "attainable_gops": 900.0, "roof_bound": "compute"}
    r = bench_moe.roofline(m["ops"], m["weight_bytes_touched"], 31.0, None)  # generic tier: no peak
    assert r == {"intensity": 64.0, "attainable_gops": None, "roof_bound": None}


def test_cli_markdown(cli_run):
    _, result, paths = cli_run
    text = paths["markdown"].read_text()
    assert text == bench_report.markdown(result)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| method | tier | M=1 | M=64 | rel. err | prefill peak |"
    assert len(table) == 1 + 1 + len(kt_kernel.METHODS) * len(result["conditions"]["isas"])
    assert "--isas all" in text
    for line in table[2:]:  # every row with a measured peak gives M=64's % of its roofline
        if not line.startswith("| torch") and "| generic |" not in line:
            assert re.search(r"\d+%\*? roof \((memory|compute)\)", line), line


def test_cli_chart(cli_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, paths = cli_run
    again = tmp_path / "again.png"
    assert bench_report.main([str(paths["json"]), "--chart", str(again)]) == 0
    for png in (paths["chart"], again):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fresh_routings_change_the_experts_from_call_to_call():
    """--fresh-routing: the decode calls take seeded routings in turn, each valid for the shape,
    most experts differing between consecutive ones, the cycle repeating."""
    shape = get_shape("A")
    routings = bench_moe.fresh_routings(shape, 1)
    assert len(routings) == bench_moe.FRESH_ROUTINGS
    sets = [set(ids[0].tolist()) for ids, _ in routings]
    assert all(len(e) == shape.K for e in sets)
    assert sum(len(a & b) for a, b in zip(sets, sets[1:])) / (len(sets) - 1) < shape.K / 2
    seen = []
    call = bench_moe.in_turn(lambda x, ids, w: seen.append(ids), None, routings)
    for _ in range(len(routings) + 1):
        call()
    assert seen[0] is routings[0][0] and seen[1] is routings[1][0] and seen[-1] is routings[0][0]
    assert bench_moe.mean_distinct(routings) == shape.K


def test_cli_fresh_routing(capsys):
    argv = ["--shapes", "S", "--tokens", "1,8", "--methods", "AMXINT4", "--fresh-routing", "--iters", "3",
            "--min-time", "0", "--warmup", "1", "--bw-mib", "16", "--peak-seconds", "0.02", "--load-seconds", "0.05",
            "--no-torch"]
    bench_moe.main(argv)
    assert "decode routings taken in turn" in capsys.readouterr().out


def test_chart_without_matplotlib_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit):
        bench_moe.parse_args(["--chart", "out.png"])
    assert 'pip install -e ".[bench]"' in capsys.readouterr().err


def test_cli_rejects_a_tier_the_cpu_lacks(capsys):
    with pytest.raises(SystemExit):
        bench_moe.parse_args(["--isas", "avx2,sse9"])
    assert "'sse9' is not a tier" in capsys.readouterr().err


@pytest.mark.parametrize("row, want", [
    ({"method": "AMXINT4", "M": 1}, 80.0),
    ({"method": "BF16", "M": 8}, 100 / 1.3),
    ({"method": TORCH_PEER, "M": 1}, None),
    ({"method": "AMXINT8", "M": 512, "peak": {"family": "int8_vpdpbusd_zmm"}}, 50.0),
    ({"method": "AMXINT4", "M": 2048, "peak": {"family": "int8_vpdpbusd_zmm"}}, 40.0),
    ({"method": "BF16", "M": 512, "peak": {"family": "bf16_dpbf16ps_zmm"}}, 70.0),
    ({"method": "BF16", "M": 512, "peak": {"family": "fp32_fma_ymm"}}, None),  # avx2: prefill reported only
    ({"method": "AMXINT8", "M": 64, "peak": {"family": "int8_vpdpbusd_zmm"}}, None),
    ({"method": "AMXINT8", "M": 512, "peak": {"family": "int8_tdpbusd_tmm"}}, None),  # amx: no target named
], ids=["int4-M1", "bf16-M8", "torch", "int8-M512", "int4-M2048", "bf16-M512", "bf16-avx2", "int8-M64",
        "int8-amx"])
def test_issue5_targets(row, want):
    assert bench_report.target_pct(row) == want


@pytest.mark.parametrize("row, want", [
    ({"method": "AMXINT8", "M": 1, "pct_bandwidth": 91.0}, (91.0, 80.0)),
    # compute-bound roofline: the same figure and target as against the peak
    ({"method": "AMXINT8", "M": 512, "pct_peak": 53.0, "pct_roofline": 53.0, "attainable_gops": 1800.0,
      "peak": {"family": "int8_vpdpbusd_zmm", "gops": 1800.0}}, (53.0, 50.0)),
    # memory-bound roofline: the target of 50% of a 1800 GOP/s peak is 900 of 1200 attainable
    ({"method": "AMXINT8", "M": 512, "pct_peak": 40.0, "pct_roofline": 60.0, "attainable_gops": 1200.0,
      "peak": {"family": "int8_vpdpbusd_zmm", "gops": 1800.0}}, (60.0, 75.0)),
    # a --json file written before the roofline
    ({"method": "BF16", "M": 512, "pct_peak": 77.0, "peak": {"family": "bf16_dpbf16ps_zmm", "gops": 1100.0}},
     (77.0, 70.0)),
], ids=["decode", "compute-bound", "memory-bound", "no-roofline"])
def test_chart_plots_prefill_against_the_roofline(row, want):
    assert (bench_report.pct_of_limit(row), bench_report.chart_target(row)) == pytest.approx(want)


def test_chart_puts_amx_prefill_against_the_named_family_peak():
    """An amx row's target is 40% (int4) of the vpdpbusd peak measured in the run, as a % of its
    tile roofline: 0.40 x 1800 / 3000 = 24%; none without that peak, nor below M=512."""
    row = {"method": "AMXINT4", "tier": "amx", "M": 512, "pct_peak": 6.0, "pct_roofline": 25.0,
           "attainable_gops": 3000.0, "peak": {"family": "int8_tdpbusd_tmm", "gops": 13000.0}}
    peaks = {"int8_vpdpbusd_zmm": 1800.0, "int8_tdpbusd_tmm": 13000.0}
    assert bench_report.target_pct(row) is None
    assert bench_report.chart_target(row, peaks) == pytest.approx(24.0)
    assert bench_report.chart_target(row, {}) is None
    assert bench_report.chart_target({**row, "M": 64}, peaks) is None
    result = {"limits": {"peaks_start": {"families": {
        "int8_vpdpbusd_zmm": {"available": True, "best": 1800.0},
        "int8_dpbusd_ymm": {"available": False}}}}}
    assert bench_report.family_peaks(result) == {"int8_vpdpbusd_zmm": 1800.0}
    assert bench_report.family_peaks({}) == {}
