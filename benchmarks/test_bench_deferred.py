"""bench_deferred.py: the rounds measure what they claim, and the script runs end to end."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

import bench_deferred


def test_rounds_alternate_and_report_the_medians(monkeypatch):
    """Round r runs the d = 0 layer first for even r and last for odd r; the kept and d = 0
    times are the medians over all calls, the deferred job's the difference of the next layer's."""
    order = []
    # per call: (the layer's own seconds, the next layer's seconds)
    script = {0: iter([(2.0, 1.0), (4.0, 1.0), (2.0, 1.0), (2.0, 1.0)]),
              1: iter([(1.0, 3.0), (1.0, 3.0), (1.5, 3.0), (1.0, 3.0)])}

    def fake_pair(layer, nxt, x, routing, nxt_inputs):
        order.append(layer)
        return next(script[layer])

    monkeypatch.setattr(bench_deferred, "timed_pair", fake_pair)
    got = bench_deferred.rounds({0: 0, 1: 1}, None, None, [None], None, n_rounds=2, calls=2, warmup=0)
    assert order == [0, 0, 1, 1, 1, 1, 0, 0]
    assert got["d0_ms"] == pytest.approx(2e3) and got["kept_ms"] == pytest.approx(1e3)
    assert got["deferred_ms"] == pytest.approx(2e3)
    # round 0: kept median 1, d = 0 median 3 -> 1/3; round 1: 1.25 / 2
    assert got["ratio_min"] == pytest.approx(1 / 3) and got["ratio_max"] == pytest.approx(0.625)
    assert got["calls"] == 4


def test_cli_small_shape(tmp_path):
    pytest.importorskip("transformers")
    paths = {"json": tmp_path / "d.json", "markdown": tmp_path / "d.md"}
    argv = ["--archs", "mixtral", "--methods", "AMXINT8", "--timing-methods", "AMXINT8", "--shape", "S",
            "--tokens", "1,8", "--rounds", "2", "--round-calls", "1", "--warmup", "1",
            "--json", str(paths["json"]), "--markdown", str(paths["markdown"])]
    with contextlib.redirect_stdout(io.StringIO()):
        bench_deferred.main(argv)
    result = json.loads(paths["json"].read_text())
    # mixtral is top-2: d = 2 is not a valid count there
    assert [(r["arch"], r["d"], r["deferring_layers"]) for r in result["accuracy"]] == [
        ("mixtral", 0, []), ("mixtral", 1, [0])]
    d0, d1 = result["accuracy"]
    assert d0["positions"] == 339 and 0 <= d0["kl_mean"] < d1["kl_mean"]
    assert [(r["d"], r["M"]) for r in result["timing"]] == [(1, 1), (1, 8), (2, 1), (2, 8)]
    for r in result["timing"]:
        assert r["d0_ms"] > 0 and r["kept_ms"] > 0 and r["calls"] == 2
    md = paths["markdown"].read_text()
    assert md.count("| mixtral (top-2) |") == 2 and md.count("\n| S | AMXINT8 |") == 4


@pytest.mark.parametrize("argv, message", [
    (["--archs", "llama"], "unknown architecture 'llama'"),
    (["--methods", "INT3"], "unknown method 'INT3'"),
    (["--ds", "-1"], "--ds must be non-negative"),
    (["--tokens", "0"], "--tokens must be positive"),
    (["--shape", "Z"], "unknown shape 'Z'"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_deferred.parse_args(argv)
    assert message in capsys.readouterr().err
