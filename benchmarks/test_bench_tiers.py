"""bench_tiers.py: the rounds alternate and give the ratios they claim, and the script runs end to end."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

import kt_kernel
from kt_kernel.accuracy import REL_ERR_BOUNDS

import bench_tiers


def test_rounds_alternate_and_each_gives_the_ratio_of_its_medians(monkeypatch):
    """Round r runs tier then reference for even r, the other way for odd r; its ratio is the
    tier's median time over the reference's in that round; the case's ratio is the median."""
    order = []
    # per call of timed_round: the times that layer's calls took in that round
    script = iter([[3.0, 1.0, 2.0], [1.0], [2.0, 2.0], [4.0, 9.0, 1.0], [6.0], [3.0, 3.0]])

    def fake_round(fn, calls, min_time):
        order.append(fn())
        return next(script)

    monkeypatch.setattr(bench_tiers, "timed_round", fake_round)
    got = bench_tiers.interleaved({"tier": lambda: "T", "reference": lambda: "R"}, rounds=3, calls=1,
                                  min_time=0.0, warmup=0)
    assert order == ["T", "R", "R", "T", "T", "R"]
    # round 0: T median 2 / R 1; round 1: R 2, T 4 -> 2; round 2: T 6 / R 3
    assert got["ratios"] == [2.0, 2.0, 2.0]
    assert got["ratio"] == 2.0 and got["ratio_min"] == 2.0 and got["ratio_max"] == 2.0
    # over all calls: tier 3, 1, 2, 4, 9, 1, 6 (median 3), reference 1, 2, 2, 3, 3 (median 2)
    assert got["calls"] == {"tier": 7, "reference": 5}
    assert got["tier_ms"] == pytest.approx(3.0e3) and got["reference_ms"] == pytest.approx(2.0e3)


def test_warmup_calls_are_untimed(monkeypatch):
    calls = {"tier": 0, "reference": 0}

    def count(k):
        def fn():
            calls[k] += 1
        return fn

    monkeypatch.setattr(bench_tiers, "timed_round", lambda fn, c, t: [1.0])
    bench_tiers.interleaved({k: count(k) for k in calls}, rounds=2, calls=1, min_time=0.0, warmup=3)
    assert calls == {"tier": 3, "reference": 3}


def test_timed_round_keeps_calling_until_both_floors():
    n = []
    times = bench_tiers.timed_round(lambda: n.append(1), calls=4, min_time=0.0)
    assert len(times) == len(n) == 4 and all(t >= 0 for t in times)


def test_cli_small_shape(tmp_path):
    tiers = kt_kernel.cpu_info()["tiers"]
    if len([t for t in tiers if t != "generic"]) < 2:
        pytest.skip("this CPU runs one vector tier")
    ref = bench_tiers.default_reference() or tiers[-1]
    tier = "avx2" if ref != "avx2" else "generic"
    paths = {"json": tmp_path / "t.json", "markdown": tmp_path / "t.md"}
    argv = ["--shapes", "S", "--tier", tier, "--reference", ref, "--rounds", "2", "--round-calls", "1",
            "--round-time", "0", "--warmup", "1", "--bw-mib", "16",
            "--json", str(paths["json"]), "--markdown", str(paths["markdown"])]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        bench_tiers.main(argv)
    result = json.loads(paths["json"].read_text())
    rows = result["results"]
    assert [(r["method"], r["M"]) for r in rows] == [(m, M) for m in bench_tiers.METHODS for M in (1, 8)]
    for r in rows:
        assert len(r["ratios"]) == 2 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
        assert r["tier_ms"] > 0 and r["reference_ms"] > 0
        assert r["kernels"][tier] != r["kernels"][ref]
        # both layers quantize the same weights the same way: their outputs differ by at most the
        # sum of their errors against the fp32 reference
        assert r["output_rel_diff"] < 2 * REL_ERR_BOUNDS[r["method"]]
    md = paths["markdown"].read_text()
    assert md.count("\n| S |") == len(rows) and f"{tier} ms" in md
    assert "shape S: read bandwidth" in text.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["--tier", "avx2", "--reference", "avx2"], "are both avx2"),
    (["--tokens", "16"], "decode token counts"),
    (["--tier", "sse9"], "--tier sse9: this CPU runs"),
    (["--methods", "INT3"], "unknown method 'INT3'"),
    (["--rounds", "0"], "--rounds must be positive"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_tiers.parse_args(argv)
    assert message in capsys.readouterr().err
