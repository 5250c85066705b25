"""The README's performance table: decode and prefill of every method against PyTorch and against
the machine's own limits, measured now, printed as Markdown ready to paste.

    python3 benchmarks/readme_table.py                      # measure now (shape A; about a minute)
    python3 benchmarks/readme_table.py --json run.json      # ... and keep the run, for docs/benchmarks/
    python3 benchmarks/readme_table.py --from-json docs/benchmarks/2026-12-02-s2/all.json  # a recorded run

A live run is bench_moe.py (docs/benchmark_protocol.md) on the protocol's shape A with
decode M=1 (routings taken in turn, so that the weights come from DRAM as in generation) and
prefill M=512, every method at the tier in use, beside the PyTorch bf16 peer, with the read
bandwidth and the instruction peaks measured in the same run. bench_moe's progress goes to stderr;
stdout is the table alone. --from-json reads any bench_moe.py --json file (the rows of
--shapes at the run's active tier, and the PyTorch peer). Options this script does not know are
passed to bench_moe.py (e.g. --threads 8).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

import bench_moe
from kt_kernel.roofline import INT_METHODS
from kt_kernel.torch_moe import TORCH_PEER

DECODE_M = 1
PREFILL_M = 512
DEFAULT_SHAPES = "A"

LEGEND = (
    "Median ms per call. Decode rate: bytes of the experts a call touches / time, as % of the read bandwidth "
    "(bw) measured just before and after the case (the higher; ~ = the two differ by more than 15%). Prefill "
    "rate: 2 x 3HI x M x K / time, as % of the measured peak of the instruction the kernels use at this tier; "
    "% of roofline: of min(that peak, bandwidth x ops per byte of weights), (memory) or (compute) naming the "
    "bound. vs PyTorch: the PyTorch bf16 peer's time / this time, same run. rel. err: "
    "||out - ref|| / ||ref|| against fp32 on the unquantized weights.")


def measure(shapes: str, extra: list[str], json_path: str | None) -> dict:
    """One bench_moe.py run of the table's cases; its printout goes to stderr."""
    argv = ["--shapes", shapes, "--tokens", f"{DECODE_M},{PREFILL_M}", "--fresh-routing", *extra]
    if json_path:
        argv += ["--json", json_path]
    with contextlib.redirect_stdout(sys.stderr):
        return bench_moe.main(argv)


def _ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _vs_torch(r: dict) -> str:
    return "1x" if r["method"] == TORCH_PEER else f"{r['x_vs_torch']:.1f}x"


def decode_cells(r: dict) -> list[str]:
    switch = "~" if r.get("regime_switch") else ""
    return [_ms(r["ms"]), f"{r['gbps']:.1f} GB/s = {r['pct_bandwidth']:.0f}%{switch} of bw", _vs_torch(r)]


def prefill_cells(r: dict) -> list[str]:
    unit = "GOP/s" if r["method"] in INT_METHODS else "GFLOP/s"
    rate = f"{r['gops']:.0f} {unit}"
    peak = r["peak"]
    if peak["gops"] is not None:
        rate += f" = {r['pct_peak']:.0f}% of {peak['instruction'].split()[0]}"
    roof = "-" if r.get("pct_roofline") is None else f"{r['pct_roofline']:.0f}% ({r['roof_bound']})"
    return [_ms(r["ms"]), f"{r['tok_s']:.0f}", rate, roof, _vs_torch(r)]


def table(result: dict, shapes: list[str], source: str) -> str:
    """The Markdown table of `result` (a bench_moe.py result): a row per shape and method."""
    c = result["conditions"]
    info = c["cpu_info"]
    tier = info["active_tier"]
    bw = [b["best_gbps"] for b in result["limits"]["bandwidth"]]
    lines = [
        f"{info['brand']}, {c['cores']} cores, {c['threads']} threads, tier `{tier}`; torch {c['torch']}; "
        f"{c['time']}; read bandwidth measured in the run {min(bw):.1f}-{max(bw):.1f} GB/s. `{source}`",
        "",
        f"| shape | method | decode M={DECODE_M} ms | decode rate | vs PyTorch | prefill M={PREFILL_M} ms "
        "| tok/s | prefill rate | % of roofline | vs PyTorch | rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        rows = [r for r in result["results"] if r["shape"] == shape and
                (r["method"] == TORCH_PEER or r["tier"] == tier)]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        if not methods:
            raise SystemExit(f"no rows of shape {shape} at tier {tier} in this run")
        for method in methods:
            by_m = {r["M"]: r for r in rows if r["method"] == method}
            missing = {DECODE_M, PREFILL_M} - set(by_m)
            if missing:
                raise SystemExit(f"shape {shape} {method}: the run has no M={sorted(missing)} "
                                 f"(it has M={sorted(by_m)})")
            d, p = by_m[DECODE_M], by_m[PREFILL_M]
            err = max(d["rel_err"], p["rel_err"])
            name = "PyTorch bf16" if method == TORCH_PEER else method
            lines.append("| " + " | ".join([shape, name, *decode_cells(d), *prefill_cells(p), f"{err:.2g}"]) + " |")
    lines += ["", LEGEND]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"protocol shapes (default {DEFAULT_SHAPES})")
    p.add_argument("--from-json", metavar="JSON", help="print the table of a recorded bench_moe.py --json run")
    p.add_argument("--json", metavar="JSON", help="keep the live run's figures here (bench_moe.py's --json)")
    args, extra = p.parse_known_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    shape_opt = "" if args.shapes == DEFAULT_SHAPES else f" --shapes {args.shapes}"
    if args.from_json:
        if extra or args.json:
            p.error("--from-json prints a recorded run; measuring options do not apply")
        with open(args.from_json) as f:
            result = json.load(f)
        source = f"python3 benchmarks/readme_table.py{shape_opt} --from-json {args.from_json}"
    else:
        result = measure(",".join(shapes), extra, args.json)
        source = (f"python3 benchmarks/readme_table.py{shape_opt}"
                  + (f" --json {args.json}; the table again: --from-json {args.json}" if args.json else ""))
    text = table(result, shapes, source)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
