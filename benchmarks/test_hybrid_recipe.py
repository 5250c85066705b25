"""benchmarks/hybrid_recipe.py runs (small calibration) and prints the README's table, with GPTQ's
GPU side closer to fp32 than round-to-nearest's."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")


def test_hybrid_recipe_table(tmp_path, capsys):
    from hybrid_recipe import main

    out = tmp_path / "rows.json"
    assert main(["--archs", "qwen3_moe", "--samples", "4", "--length", "64", "--json", str(out)]) == 0
    assert "| qwen3_moe | W4A16 g32 GPTQ | AMXINT4 |" in capsys.readouterr().out
    rows = {r["gpu side"]: r for r in json.loads(out.read_text())}
    assert rows["W4A16 g32 GPTQ"]["kl_mean"] < rows["W4A16 g32 RTN"]["kl_mean"]
