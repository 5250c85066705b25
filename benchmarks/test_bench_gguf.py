"""bench_gguf.py: the GGUF file it writes, and the script end to end on a small shape, with each
side's output checked against the fp64 reference on gguf's dequantization.

    pytest benchmarks/test_bench_gguf.py
    KT_UPSTREAM_PYTHON=/path/to/upstream-venv/bin/python pytest benchmarks/test_bench_gguf.py   # upstream too
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from kt_kernel.accuracy import REL_ERR_BOUNDS
from kt_kernel.torch_moe import TORCH_PEER

import bench_gguf
from gguf_side import PROJECTIONS, GgufLayer, projection_shape
from shapes import Shape

TINY = Shape("T", H=256, I=512, E=4, K=2, like="tiny test layer")
UPSTREAM = os.environ.get("KT_UPSTREAM_PYTHON")
FAST = ["--shapes", "S", "--tokens", "1,8", "--iters", "3", "--min-time", "0", "--warmup", "1",
        "--bw-mib", "64", "--peak-seconds", "0.05", "--paired-rounds", "3"]


def run(argv, tmp_path: Path) -> dict:
    paths = {"json": tmp_path / "g.json", "markdown": tmp_path / "g.md"}
    with contextlib.redirect_stdout(io.StringIO()):
        bench_gguf.main([*argv, "--json", str(paths["json"]), "--markdown", str(paths["markdown"])])
    result = json.loads(paths["json"].read_text())
    result["markdown_text"] = paths["markdown"].read_text()
    return result


def rows_of(result: dict, side: str) -> list[dict]:
    return [r for r in result["results"] if r["side"] == side]


@pytest.mark.parametrize("kt_has_type", [True, False], ids=["quantized", "random-blocks"])
def test_layer_file(tmp_path, monkeypatch, kt_has_type):
    """The file holds the layer's metadata and three expert tensors of the type, at the weights'
    std, from our quantizer or else random valid blocks."""
    if not kt_has_type:
        monkeypatch.setattr(bench_gguf, "kt_format", lambda name: None)
    path = tmp_path / "t.gguf"
    written = bench_gguf.write_layer_file(path, TINY, "q8_0")
    assert written["blocks"] == ("kt_kernel quantizer" if kt_has_type else "random valid blocks")
    # q8_0's d = amax / 127 of 32 Gaussians of std 0.02-0.03 is near 5e-4, above fp16's subnormals;
    # random blocks take a quarter of theirs there (gguf_reference.fp16_scales)
    assert (written["subnormal_share"] == 0) if kt_has_type else (0.15 < written["subnormal_share"] < 0.35)
    layer = GgufLayer(str(path))
    assert (layer.H, layer.I, layer.E, layer.K) == (TINY.H, TINY.I, TINY.E, TINY.K)
    for proj in PROJECTIONS:
        rows, cols = projection_shape(proj, TINY.H, TINY.I)
        assert layer.ggml_type(proj) == gguf.GGMLQuantizationType.Q8_0
        assert layer.blocks(proj).shape == (TINY.E, rows, cols // 32 * 34)
        w = np.stack([layer.dequantize(proj, e) for e in range(TINY.E)])
        assert w.shape == (TINY.E, rows, cols)
        assert abs(w.std() / bench_gguf.WEIGHT_STD[proj] - 1) < 0.2, (proj, w.std())


def test_rows_from_a_pool(tmp_path):
    """With a pool of quantized rows, every row of the file is one of them, and experts differ."""
    written = bench_gguf.write_layer_file(tmp_path / "t.gguf", TINY, "q8_0", pool_rows=16)
    assert written["blocks"] == "kt_kernel quantizer, rows from a pool of 16"
    gate = GgufLayer(str(tmp_path / "t.gguf")).blocks("gate")
    assert 8 < len(np.unique(gate.reshape(-1, gate.shape[-1]), axis=0)) <= 16
    assert not np.array_equal(gate[0], gate[1])


def test_cli_small_shape(tmp_path):
    result = run([*FAST, "--types", "q8_0", "--sides", "ours,torch"], tmp_path)
    ours, peer = rows_of(result, "ours"), rows_of(result, "torch")
    assert [r["M"] for r in ours] == [1, 8] and [r["M"] for r in peer] == [1, 8]
    for r in ours:
        assert r["status"] == "ok" and r["iters"] == 3 and r["ms"] > 0
        assert r["rel_err"] < r["bound"] == bench_gguf.kt_format("q8_0")["layer_rel_err"], r
        assert r["bytes_per_weight"] == pytest.approx(34 / 32)
        assert r["pct_limit"] > 0 and r["torch_over_this"] > 0 and r["upstream_over_ours"] is None
        assert r["may_be_cached"] == bool(bench_gguf.cache_bytes())  # shape S's experts fit any cache
        # the % of bandwidth: the median of the paired rounds' ratios (probe, then 8 calls)
        pairs = r["paired"]
        assert len(pairs) == 3 and all(bw > 0 and t > 0 for bw, t in pairs)
        ratios = sorted(100 * r["weight_bytes_touched"] / t / 1e9 / bw for bw, t in pairs)
        assert r["pct_limit"] == pytest.approx(ratios[1]) and r["paired_bw_range"][0] <= r["bandwidth_gbps"]
        assert r["info"]["formats"] == ["q8_0", "q8_0"] and "_q8_0_" in r["info"]["kernel"]
    for r in peer:
        assert r["status"] == "ok" and r["rel_err"] < REL_ERR_BOUNDS[TORCH_PEER], r
    (file,) = result["files"]
    assert file["blocks"].startswith("kt_kernel quantizer") and file["ours"]["kernel"] == ours[0]["info"]["kernel"]
    assert len(result["limits"]["bandwidth"]) == 3  # before each side and at the end
    assert result["markdown_text"].count("\n| q8_0 | ours | ") == 2


def test_cli_fp8_release(tmp_path):
    """--types fp8: an FP8 release's folder (DeepSeek-V3 layout), method FP8 on its sides, the
    reference on torch's float8 decoding of the file."""
    result = run([*FAST, "--types", "fp8", "--sides", "ours,torch"], tmp_path)
    ours, peer = rows_of(result, "ours"), rows_of(result, "torch")
    assert [r["M"] for r in ours] == [1, 8] and [r["M"] for r in peer] == [1, 8]
    for r in ours:
        assert r["status"] == "ok" and r["info"]["formats"] == ["fp8_g128", "fp8_g128"] and "fp8g128" in r["kernel"]
        # the weights are the file's exactly: only the activations' rounding is left
        assert r["rel_err"] < 0.01 and r["bytes_per_weight"] == pytest.approx(8.25 / 8), r
    for r in peer:
        assert r["status"] == "ok" and r["rel_err"] < REL_ERR_BOUNDS[TORCH_PEER], r
    (file,) = result["files"]
    assert file["blocks"].startswith("torch float8_e4m3fn") and file["subnormal_what"] == "e4m3 weights"
    assert result["markdown_text"].count("\n| fp8 | ours | ") == 2


def test_cli_int4_release(tmp_path):
    """--types rawint4: a compressed-tensors int4 release (compressed-tensors' compressor), method
    RAWINT4 on its sides (int4_g32_zp), the reference on the file's scale * (q - 8)."""
    result = run([*FAST, "--types", "rawint4", "--sides", "ours,torch"], tmp_path)
    ours, peer = rows_of(result, "ours"), rows_of(result, "torch")
    assert [r["M"] for r in ours] == [1, 8] and [r["M"] for r in peer] == [1, 8]
    for r in ours:
        assert r["status"] == "ok" and r["info"]["formats"] == ["int4_g32_zp", "int4_g32_zp"] and "int4g32zp" in r["kernel"]
        # the weights are the file's exactly: only the activations' int8 rounding is left
        assert r["rel_err"] < 0.02 and r["bytes_per_weight"] == pytest.approx(5 / 8), r
    for r in peer:
        assert r["status"] == "ok" and r["rel_err"] < REL_ERR_BOUNDS[TORCH_PEER], r
    assert result["files"][0]["blocks"].startswith("compressed-tensors pack-quantized int4")


def test_cli_gptq_release(tmp_path):
    """--types gptq: an AutoGPTQ int4 release (symmetric groups of 128, fp16 scales), method
    GPTQ_INT4 on its sides (int4_g32_zp), the reference on the file's scale * (q - zero point)."""
    result = run([*FAST, "--types", "gptq", "--sides", "ours,torch"], tmp_path)
    ours, peer = rows_of(result, "ours"), rows_of(result, "torch")
    assert [r["M"] for r in ours] == [1, 8] and [r["M"] for r in peer] == [1, 8]
    for r in ours:
        assert r["status"] == "ok" and r["info"]["formats"] == ["int4_g32_zp", "int4_g32_zp"] and "int4g32zp" in r["kernel"]
        assert r["rel_err"] < 0.02, r  # the file's weights exactly: only the activations' int8 rounding
    for r in peer:
        assert r["status"] == "ok" and r["rel_err"] < REL_ERR_BOUNDS[TORCH_PEER], r
    assert result["files"][0]["blocks"].startswith("AutoGPTQ int4")


def test_sides_that_cannot_run_are_reported(tmp_path, monkeypatch):
    """A type kt_kernel lacks is reported missing for ours, and the file holds random valid blocks;
    a side whose process fails is a row saying so, with its log's tail; the others still run."""
    monkeypatch.setattr(bench_gguf, "kt_format", lambda name: None)
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: no kt_kernel here'\nexit 3\n")
    python.chmod(0o755)
    result = run([*FAST, "--tokens", "1", "--types", "q8_0", "--upstream-python", str(python)], tmp_path)
    (ours,), (up,), (peer,) = (rows_of(result, side) for side in ("ours", "upstream", "torch"))
    assert ours["status"].startswith("missing: kt_kernel has no q8_0 format")
    assert up["status"] == "failed: exit status 3 (ModuleNotFoundError: no kt_kernel here)"
    assert up["log_tail"] == ["ModuleNotFoundError: no kt_kernel here"]
    assert peer["status"] == "ok" and peer["rel_err"] < REL_ERR_BOUNDS[TORCH_PEER]
    assert result["files"][0]["blocks"] == "random valid blocks" and "ours" not in result["files"][0]
    assert "| q8_0 | ours | - | missing" in result["markdown_text"]


@pytest.mark.skipif(not UPSTREAM or not Path(UPSTREAM).exists(),
                    reason="upstream kt-kernel's environment: set KT_UPSTREAM_PYTHON to its python")
def test_upstream_small_shape(tmp_path):
    result = run([*FAST, "--types", "q8_0", "--sides", "ours,upstream", "--upstream-python", UPSTREAM], tmp_path)
    ours, up = rows_of(result, "ours"), rows_of(result, "upstream")
    assert [r["M"] for r in up] == [1, 8]
    for o, u in zip(ours, up):
        assert u["status"] == "ok" and u["threads"] in (1, bench_gguf.all_cores())
        # the same layer: upstream's error (its own activation rounding) is of the format's size
        assert u["rel_err"] < 2 * o["bound"], u
        assert o["upstream_over_ours"] == pytest.approx(u["ms"] / o["ms"])


@pytest.mark.parametrize("argv, message", [
    (["--types", "q4_X"], "unknown GGUF block type 'q4_X'"),
    (["--types", "f16"], "unknown GGUF block type 'f16'"),
    (["--sides", "ggml"], "unknown side 'ggml'"),
    (["--tokens", "0"], "--tokens must be positive"),
    (["--shapes", "Z"], "unknown shape 'Z'"),
    (["--upstream-python", "/nonexistent/python"], "does not exist"),
    (["--pool-rows", "-1"], "--pool-rows must be 0"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_gguf.parse_args(argv)
    assert message in capsys.readouterr().err


def test_types_table_measures_within_the_records_bounds():
    """benchmarks/gguf_types.py (the README's table of GGUF types): both errors of a type within its
    record's layer bound, the kernels' well below the quantizer's."""
    import gguf_types
    from kt_kernel.formats import gguf_formats

    record = next(f for f in gguf_formats() if f["name"] == "q4_K")
    row = gguf_types.measure(record)
    assert row["type"] == "Q4_K" and row["bits"] == 4.5
    assert row["kernels"] < 0.05 and row["kernels"] < row["vs_fp32"] <= record["layer_rel_err"], row


def test_summary_pairs_ours_with_upstream():
    """benchmarks/gguf_summary.py (the README's GGUF speed table) from bench_gguf's result rows."""
    import gguf_summary

    def row(side, M, ms, **more):
        return {"shape": "A", "type": "q4_K", "side": side, "M": M, "ms": ms, "status": "ok", "rel_err": 0.02,
                "pct_limit": 40.0, "gops": 300.0, "bandwidth_gbps": 37.2, **more}

    table = gguf_summary.summary([row("ours", 1, 2.0, may_be_cached=True), row("upstream", 1, 3.0),
                                  row("ours", 8, 9.0, pct_limit=85.0), row("ours", 512, 100.0),
                                  row("upstream", 512, 150.0)])
    assert table.splitlines()[-1] == ("| A | q4_K | 2 | 3 | 1.50x | 40%* of 37 GB/s | 85% of 37 GB/s | 100 | 150 | "
                                      "1.50x | 300 GOP/s (40%) | 0.0200 / 0.0200 |")


def test_summary_keeps_the_types_asked_for(tmp_path, capsys):
    """--types: a run measured with several types gives the rows of those named only."""
    import json

    import gguf_summary

    rows = [{"shape": "B", "type": t, "side": side, "M": 1, "ms": 2.0, "status": "ok", "rel_err": 0.01,
             "pct_limit": 80.0, "bandwidth_gbps": 50.0} for t in ("mxfp4", "rawint4") for side in ("ours", "upstream")]
    run = {"limits": {"bandwidth": [{"best_gbps": 50.0}]}, "results": rows,
           "conditions": {"cpu_info": {"brand": "cpu"}, "threads": 2, "time": "now"}}
    (tmp_path / "B.json").write_text(json.dumps(run))
    assert gguf_summary.main([str(tmp_path / "B.json"), "--types", "mxfp4"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| B ")]
    assert [line.split(" | ")[1] for line in table] == ["mxfp4"]
