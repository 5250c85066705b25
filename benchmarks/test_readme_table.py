"""readme_table.py: its live run prints a row per method and the PyTorch peer, a kept run prints the
same table again, and the README's table is the one its named recorded run gives."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import kt_kernel

import readme_table

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--iters", "2", "--min-time", "0", "--warmup", "1", "--bw-mib", "16", "--peak-seconds", "0.02",
         "--load-seconds", "0.05"]


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| shape ")]


def test_live_run_and_its_json_give_the_same_table(tmp_path, capsys):
    kept = tmp_path / "run.json"
    live = readme_table.main(["--shapes", "S", "--json", str(kept), *QUICK])
    out = capsys.readouterr()
    assert out.out == live  # stdout is the table alone; bench_moe's progress went to stderr
    assert "instruction peaks" in out.err
    rows = table_rows(live)
    assert [r.split(" | ")[1] for r in rows] == ["PyTorch bf16", *kt_kernel.METHODS]
    for r in rows:
        assert re.search(r"GB/s = \d+%~? of bw \|", r) and re.search(r"\| \d+% \((memory|compute)\) \|", r), r
    with contextlib.redirect_stdout(io.StringIO()):
        again = readme_table.main(["--shapes", "S", "--from-json", str(kept)])
    assert table_rows(again) == rows


def test_readme_table_is_its_recorded_run():
    readme = (ROOT / "README.md").read_text()
    named = re.search(r"`python3 benchmarks/readme_table\.py(?: --shapes (\S+))?.*?--from-json (\S+?)`", readme)
    assert named, "the README's performance table must name the recorded run it shows (--from-json)"
    shapes, run = named.group(1) or readme_table.DEFAULT_SHAPES, named.group(2)
    with contextlib.redirect_stdout(io.StringIO()):
        text = readme_table.main(["--shapes", shapes, "--from-json", str(ROOT / run)])
    rows = table_rows(text)
    assert rows and all(r in readme.splitlines() for r in rows), "README table differs from " + run
