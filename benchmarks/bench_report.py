"""Reports of a bench_moe.py run: a roofline-style PNG chart and the results table in Markdown.

    python benchmarks/bench_report.py results.json --chart results.png --markdown results.md

reads the --json file of a bench_moe.py run (bench_moe.py --chart / --markdown write the same from
the run itself). The chart shows, per shape, for every case (method, tier, M) the fraction of its
limit it reached: decode (M <= 8) of the read bandwidth, prefill (M >= 64) of its roofline
(bench_moe.roofline: the lower of the peak of the instruction family its kernels use and the read
bandwidth times the case's ops per byte of weights), all measured in the same run, with the
targets of issue 5 marked (converted from % of the peak where the roofline is the bandwidth's).
The Markdown table gives both % of the peak and % of the roofline.
The chart needs matplotlib (pip install -e ".[bench]"); the Markdown table does not.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

import kt_kernel

from kt_kernel.roofline import INT_METHODS  # counted in GOP/s

from shapes import DECODE_TOKENS

# Targets of issue 5, in % of the case's limit. Decode, every method and tier: M=1 80% of the read
# bandwidth; M=8 at most 1.3x the time to stream the touched experts once, so 100/1.3 = 77%.
DECODE_TARGET_PCT = {1: 80.0, 8: 100 / 1.3}
# Prefill M=512 (and above): % of the peak of a named instruction family. Where the row's tier runs
# that family, the target is a % of the row's own peak; at the amx tier, whose peak is the tiles',
# the chart draws it as the same rate (% x that family's peak measured at the start of the run); on
# the tiers below the family (avx2, avx512) prefill is reported without a target.
PREFILL_TARGET_M = 512
PREFILL_TARGETS = {"AMXINT8": ("int8_vpdpbusd_zmm", 50.0), "AMXINT4": ("int8_vpdpbusd_zmm", 40.0),
                   "BF16": ("bf16_dpbf16ps_zmm", 70.0)}


def is_decode(row: dict) -> bool:
    return row["M"] in DECODE_TOKENS


def pct_of_limit(row: dict) -> float | None:
    """% of the case's limit: read bandwidth at decode; at prefill the roofline, min(instruction
    peak, read bandwidth x ops per byte of weights) (the instruction peak in --json files written
    before the roofline); None where the tier has no measured family (the generic tier)."""
    if is_decode(row):
        return row["pct_bandwidth"]
    roof = row.get("pct_roofline")
    return row["pct_peak"] if roof is None else roof


def chart_target(row: dict, family_peaks: dict | None = None) -> float | None:
    """target_pct in the unit pct_of_limit plots: a prefill target is a % of the instruction peak,
    which is that % x peak / attainable of the roofline. An amx row's target is the rate of its
    method's target family, family_peaks[family] (GOP/s measured in the same run) x its %."""
    t = target_pct(row)
    if t is None and not is_decode(row) and row.get("tier") == "amx" and row.get("attainable_gops"):
        family, pct = PREFILL_TARGETS.get(row["method"], (None, None))
        peak = (family_peaks or {}).get(family)
        if peak is None or row["M"] < PREFILL_TARGET_M:
            return None
        return pct * peak / row["attainable_gops"]
    if t is None or is_decode(row) or row.get("pct_roofline") is None:
        return t
    return t * row["peak"]["gops"] / row["attainable_gops"]


def family_peaks(result: dict) -> dict:
    """{family: best GOP/s} of the instruction families measured at the start of the run ({} in
    files written before it was recorded)."""
    families = result.get("limits", {}).get("peaks_start", {}).get("families", {})
    return {f: v["best"] for f, v in families.items() if v.get("available") and v.get("best")}


def target_pct(row: dict) -> float | None:
    """The issue-5 target for the row's case in % of its limit, None where there is none (the
    PyTorch peer, M between decode and 512, a tier below the named family)."""
    if is_decode(row):
        return DECODE_TARGET_PCT.get(row["M"]) if row["method"] in PREFILL_TARGETS else None
    family, pct = PREFILL_TARGETS.get(row["method"], (None, None))
    if family is None or row["M"] < PREFILL_TARGET_M or row["peak"]["family"] != family:
        return None
    return pct


def series(rows: list[dict]) -> list[tuple[str, str]]:
    """(method, tier) pairs, grouped by method; methods and tiers in the order the run measured them."""
    pairs = list(dict.fromkeys((r["method"], r["tier"]) for r in rows))
    methods = list(dict.fromkeys(m for m, _ in pairs))
    return sorted(pairs, key=lambda p: methods.index(p[0]))  # stable: tiers keep their order


# ---- Markdown ----------------------------------------------------------------------------------

def _ms(ms: float) -> str:
    """Three significant digits, no exponent: 0.642, 38.4, 293, 5041."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _cell(r: dict) -> str:
    speedup = "" if r["x_vs_torch"] is None else f", {r['x_vs_torch']:.1f}x"
    if is_decode(r):
        cached = "*" if r.get("may_be_cached") else ""
        switch = "~" if r.get("regime_switch") else ""
        return f"{_ms(r['ms'])}{cached} ({r['pct_bandwidth']:.0f}%{switch} bw{speedup})"
    unit = "GOP/s" if r["method"] in INT_METHODS else "GF/s"
    pct = "" if r["pct_peak"] is None else f", {r['pct_peak']:.0f}%"
    # .get: --json files written before the roofline have no pct_roofline
    roof = ""
    if r.get("pct_roofline") is not None:
        cached = "*" if r.get("may_be_cached") and r["roof_bound"] == "memory" else ""
        roof = f", {r['pct_roofline']:.0f}%{cached} roof ({r['roof_bound']})"
    return f"{_ms(r['ms'])} ({r['gops']:.0f} {unit}{pct}{roof}{speedup})"


def _peak_text(peak: dict) -> str:
    if peak["gops"] is None:
        return "-"
    return f"{peak['instruction']} {peak['gops']:.0f} {peak['unit']}"


def software() -> dict:
    """The versions and the start time every run's "conditions" record."""
    return {"torch": torch.__version__, "kt_kernel": kt_kernel.__version__,
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_files(result: dict, json_path: str | None, markdown_path: str | None, to_markdown=None) -> None:
    """A run's --json (the result) and --markdown (to_markdown(result), by default this module's
    table of a bench_moe.py run) files, each where a path is given."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {json_path}")
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write((to_markdown or markdown)(result))
        print(f"wrote {markdown_path}")


def markdown(result: dict) -> str:
    """The results as Markdown: one table per shape, a row per (method, tier), a column per M."""
    c = result["conditions"]
    info = c["cpu_info"]
    bw = result["limits"]["bandwidth"]
    lines = [
        f"`{' '.join(['python3', *result['command']])}`",
        "",
        f"{info['brand']}, {c['cores']} cores, {c['threads']} threads, tiers {', '.join(c['isas'])}; "
        f"{'cold' if c['cold_caches'] else 'warm'} caches{'; decode routings in turn (--fresh-routing)' if c.get('fresh_routing') else ''}; torch {c['torch']}, kt_kernel {c['kt_kernel']}; "
        f"{c['time']}. Read bandwidth in the same run {min(b['best_gbps'] for b in bw):.1f}-"
        f"{max(b['best_gbps'] for b in bw):.1f} GB/s.",
        "",
        "ms per call (% of the limit: read bandwidth (bw) at M <= 8, peak of the instruction family at M >= 64; "
        "roof = % of the roofline's attainable rate at M >= 64, min(peak, read bandwidth x ops per byte of expert "
        "weights streamed), (memory) where the bandwidth term is the lower, (compute) where the peak is; "
        "x = speed-up over the PyTorch bf16 peer in the same run; * = weights under 2x the L2+L3 caches, "
        "partly read from cache when warm; decode is held to the higher of the bandwidth readings just before "
        "and just after it, ~ = they differ by more than 15%); rel. err against the fp32 reference, the largest "
        "over M.",
    ]
    for name, shape in result["shapes"].items():
        rows = [r for r in result["results"] if r["shape"] == name]
        if not rows:
            continue
        tokens = sorted({r["M"] for r in rows})
        lines += ["", f"Shape {name} (H={shape['H']}, I={shape['I']}, E={shape['E']}, K={shape['K']}; {shape['like']}):",
                  "", "| method | tier | " + " | ".join(f"M={m}" for m in tokens) + " | rel. err | prefill peak |",
                  "|---|---|" + "---|" * len(tokens) + "---|---|"]
        for method, tier in series(rows):
            mine = {r["M"]: r for r in rows if r["method"] == method and r["tier"] == tier}
            cells = [_cell(mine[m]) if m in mine else "-" for m in tokens]
            err = max(r["rel_err"] for r in mine.values())
            peak = next(iter(mine.values()))["peak"]
            lines.append(f"| {method} | {tier} | " + " | ".join(cells) + f" | {err:.2g} | {_peak_text(peak)} |")
    return "\n".join(lines) + "\n"


# ---- chart -------------------------------------------------------------------------------------

def require_matplotlib():
    """matplotlib, or ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError('the chart needs matplotlib: pip install -e ".[bench]" (or pip install matplotlib)') from e
    return matplotlib


# One colour map per method, a shade per tier; the PyTorch peer in grey.
# one colormap per method, in the order of the format records
METHOD_COLORMAPS = dict(zip(kt_kernel.METHODS, ("Greens", "Oranges", "Blues", "Purples", "Reds", "YlOrBr", "PuRd")))


def _colors(pairs: list[tuple[str, str]]) -> dict:
    import matplotlib

    colors = {}
    for method in dict.fromkeys(m for m, _ in pairs):
        tiers = [t for m, t in pairs if m == method]
        cmap = matplotlib.colormaps[METHOD_COLORMAPS.get(method, "Greys")]
        for i, tier in enumerate(tiers):
            colors[method, tier] = cmap(0.85 - 0.45 * i / max(1, len(tiers) - 1))
    return colors


def draw_chart(result: dict, path: str) -> None:
    """Bars of % of the limit per case, a panel per (shape, decode | prefill), targets as black ticks."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = result["results"]
    peaks = family_peaks(result)
    pairs = series(rows)
    colors = _colors(pairs)
    shapes = [s for s in result["shapes"] if any(r["shape"] == s for r in rows)]
    phases = [(label, pred) for label, pred in (("decode", is_decode), ("prefill", lambda r: not is_decode(r)))
              if any(pred(r) for r in rows)]
    width = 0.8 / len(pairs)
    groups = max(len({r["M"] for r in rows if pred(r)}) for _, pred in phases)
    fig = Figure(figsize=(max(5.0, 0.25 * len(pairs) * groups + 1.5) * len(phases), 3.2 * len(shapes) + 1.4),
                 layout="constrained")
    axes = fig.subplots(len(shapes), len(phases), squeeze=False)
    for si, shape in enumerate(shapes):
        for pi, (phase, pred) in enumerate(phases):
            ax = axes[si][pi]
            mine = [r for r in rows if r["shape"] == shape and pred(r)]
            tokens = sorted({r["M"] for r in mine})
            top = 100.0
            for j, pair in enumerate(pairs):
                for g, M in enumerate(tokens):
                    r = next((r for r in mine if (r["method"], r["tier"]) == pair and r["M"] == M), None)
                    v = None if r is None else pct_of_limit(r)
                    if v is None:
                        continue
                    x = g - 0.4 + width * (j + 0.5)
                    ax.bar(x, v, width, color=colors[pair], edgecolor="white", linewidth=0.3)
                    ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=5, rotation=90)
                    t = chart_target(r, peaks)
                    if t is not None:
                        ax.hlines(t, x - width / 2, x + width / 2, colors="black", linewidth=1.5)
                    top = max(top, v, t or 0)
            ax.axhline(100, color="grey", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(tokens)), [f"M={m}" for m in tokens])
            ax.set_ylim(0, top * 1.15)
            ax.set_ylabel("% of read bandwidth" if phase == "decode" else "% of roofline")
            ax.set_title(f"shape {shape} {phase}", fontsize=10)
    c = result["conditions"]
    fig.suptitle(f"{c['cpu_info']['brand']}, {c['threads']} threads, {'cold' if c['cold_caches'] else 'warm'} "
                 f"caches, {c['time']}: achieved fraction of the limit measured in the same run", fontsize=9)
    handles = [Patch(color=colors[p], label=f"{p[0]} {p[1]}") for p in pairs]
    handles.append(Line2D([], [], color="black", linewidth=1.5, label="target (issue 5)"))
    handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.8, label="limit"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=7)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="the --json file of a bench_moe.py run")
    p.add_argument("--chart", default=None, metavar="PNG", help="draw the chart here")
    p.add_argument("--markdown", default=None, metavar="MD", help="write the Markdown table here ('-': stdout)")
    args = p.parse_args(argv)
    if not (args.chart or args.markdown):
        p.error("nothing to do: give --chart and/or --markdown")
    with open(args.results) as f:
        result = json.load(f)
    if args.markdown == "-":
        sys.stdout.write(markdown(result))
    elif args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(result))
    if args.chart:
        try:
            draw_chart(result, args.chart)
        except ImportError as e:
            p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
