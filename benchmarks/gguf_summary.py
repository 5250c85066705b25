"""The README's GGUF and FP8 speed tables: per shape and type, decode (M=1) and prefill (M=512) of
kt_kernel's LLAMAFILE (FP8 for the type fp8) against upstream kt-kernel 0.7.2's same method, from
the JSON of bench_gguf.py runs.

    python3 benchmarks/gguf_summary.py docs/benchmarks/2026-12-05-gguf/A.json docs/benchmarks/2026-12-05-gguf/B_q4_K.json
"""
from __future__ import annotations

import argparse
import json


def _ms(r) -> str:
    return f"{r['ms']:.3g}" if r["ms"] < 100 else f"{r['ms']:.0f}"


def _row(rows: list, side: str, M: int):
    return next((r for r in rows if r["side"] == side and r["M"] == M and r.get("status") == "ok"), None)


def _pct_bw(r) -> str:
    """A decode row's % of the read bandwidth, and that bandwidth (the median of the probes beside
    its calls, or the probe before its side)."""
    if r is None:
        return "-"
    return f"{r['pct_limit']:.0f}%{'*' if r.get('may_be_cached') else ''} of {r['bandwidth_gbps']:.0f} GB/s"


def summary(results: list) -> str:
    lines = ["| shape | type | M=1: ours ms | upstream ms | upstream / ours | ours % of bw | M=8: ours % of bw | "
             "M=512: ours ms | upstream ms | upstream / ours | ours GOP/s or GF/s (% of peak) | rel err ours / upstream |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["shape"], r["type"]) for r in results))
    for shape, fmt in keys:
        rows = [r for r in results if r["shape"] == shape and r["type"] == fmt]
        cells = [shape, fmt]
        for M in (1, 512):
            ours, up = _row(rows, "ours", M), _row(rows, "upstream", M)
            cells += [_ms(ours) if ours else "-", _ms(up) if up else "-",
                      f"{up['ms'] / ours['ms']:.2f}x" if ours and up else "-"]
            if M == 1:
                cells += [_pct_bw(ours), _pct_bw(_row(rows, "ours", 8))]
            elif ours:
                unit = "GF/s" if fmt == "fp8" else "GOP/s"
                cells.append(f"{ours['gops']:.0f} {unit} ({ours['pct_limit']:.0f}%)")
            else:
                cells.append("-")
        ours, up = _row(rows, "ours", 512) or _row(rows, "ours", 1), _row(rows, "upstream", 512) or _row(rows, "upstream", 1)
        cells.append(f"{ours['rel_err']:.4f} / {up['rel_err']:.4f}" if ours and up else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="JSON files written by bench_gguf.py --json")
    p.add_argument("--types", help="only these types, comma-separated (e.g. mxfp4): a run may hold others")
    args = p.parse_args(argv)
    results = []
    for path in args.runs:
        with open(path) as f:
            run = json.load(f)
        bw = [b["best_gbps"] for b in run["limits"]["bandwidth"]]
        c = run["conditions"]
        print(f"{path}: {c['cpu_info']['brand']}, {c['threads']} threads, {c['time']}, read bandwidth "
              f"{min(bw):.1f}-{max(bw):.1f} GB/s")
        results += [r for r in run["results"] if not args.types or r["type"] in args.types.split(",")]
    print()
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
