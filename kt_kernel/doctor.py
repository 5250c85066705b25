"""What this machine can do for kt_kernel: ``python -m kt_kernel.doctor``.

Prints, in sections:
  CPU          brand, vendor, family/model, the features CPUID/XGETBV report;
  NUMA         the nodes as the OS names them, their CPUs and those this process may use;
  ISA tier     the tier kt_kernel's kernels use, why AMX is (not) used, and where the decode
               kernels prefetch the weight stream (kt_kernel.cpu_info());
  bandwidth    streaming read bandwidth (1 thread and N threads, best and median GB/s);
  peaks        the peak of each instruction family this CPU has, on N threads at once;
  decode       predicted decode tokens/s per method for the model shapes asked for: an UPPER BOUND
               from read bandwidth alone (each token reads the weights of the experts it is routed
               to in every MoE layer, once, from memory; no caching, no compute, nothing else).

The measurements come from the C++ probe (kt_kernel._ext.probe_bandwidth / probe_peaks): N
std::threads in the engine's thread model, pinned like the engine's (one per allowed CPU when N is
at most the allowed CPUs and KT_KERNEL_PIN_THREADS is not 0) unless --pin / --no-pin.

    python -m kt_kernel.doctor                          # all presets, all cores
    python -m kt_kernel.doctor --model deepseek-v3 --threads 2
    python -m kt_kernel.doctor --config path/to/config.json
    python -m kt_kernel.doctor --hidden 4096 --intermediate 14336 --experts-per-token 2 --moe-layers 32
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace

from kt_kernel import _ext
from kt_kernel.cpu import cpu_info
from kt_kernel.numa import SIMULATE_ENV, topology
from kt_kernel.formats import formats
from kt_kernel.roofline import (PRESET_ALIASES, PRESETS, ModelShape, bytes_per_token, bytes_per_weight,
                                predict_decode_tok_s, shape_from_hf_config)
from kt_kernel.threads import all_cores
from kt_kernel.timing import Stopwatch

# ---- measurements -----------------------------------------------------------------------------

def measure(threads: int, seconds: float = 0.5, mib: int = 1024, repeats: int = 10, pin: bool | None = None) -> dict:
    """Clock estimate, read bandwidth (1 and `threads` threads) and instruction peaks (`threads`),
    and the cores other processes kept busy meanwhile. pin None: the engine's rule."""
    clock = Stopwatch(load=True)
    out = {
        "clock_ghz": _ext.probe_clock_ghz(0.2),
        "bandwidth_1": _ext.probe_bandwidth(1, mib, repeats, pin),
        "bandwidth_n": _ext.probe_bandwidth(threads, mib, repeats, pin),
        "peaks": _ext.probe_peaks(threads, seconds, pin),
    }
    out["other_cores"] = clock.other_cores()
    out["seconds"] = clock.seconds
    return out


def cpu_identity() -> dict:
    """Vendor family/model/stepping from /proc/cpuinfo (empty where unavailable), with the AMD
    core generation where the family tells it."""
    ident = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "stepping", "model name", "microcode"):
                    ident[key.replace(" ", "_")] = val.strip()
    except OSError:
        return ident
    fam = int(ident["cpu_family"]) if ident.get("cpu_family", "").isdigit() else None
    if "AMD" in ident.get("model_name", "") or cpu_info()["vendor"] == "AuthenticAMD":
        ident["generation"] = {0x17: "Zen / Zen 2", 0x19: "Zen 3 / Zen 4", 0x1A: "Zen 5"}.get(fam, "?")
    return ident


# ---- report -----------------------------------------------------------------------------------

def resolve_shapes(args) -> list[ModelShape]:
    custom = {k: getattr(args, k) for k in ("hidden", "intermediate", "experts_per_token", "moe_layers")
              if getattr(args, k) is not None}
    if args.config:
        try:
            with open(args.config) as f:
                cfg = json.load(f)
            base = [shape_from_hf_config(cfg, os.path.basename(os.path.dirname(os.path.abspath(args.config)))
                                         or args.config)]
        except OSError as e:
            raise SystemExit(f"--config {args.config}: cannot read it: {e.strerror or e}")
        except (ValueError, AttributeError, TypeError) as e:  # not JSON, not an object, or no MoE shape fields
            raise SystemExit(f"--config {args.config}: not a usable Hugging Face config.json: {e}")
    elif args.model == "all":
        base = list(PRESETS.values())
    else:
        key = PRESET_ALIASES.get(args.model.lower(), args.model.lower())
        if key not in PRESETS:
            raise SystemExit(f"unknown --model {args.model!r}; presets: {', '.join(PRESETS)} "
                             f"(aliases {', '.join(PRESET_ALIASES)}), or all")
        base = [PRESETS[key]]
    if custom:
        if args.model == "all" and not args.config:
            missing = [k for k in ("hidden", "intermediate", "experts_per_token", "moe_layers") if k not in custom]
            if missing:
                raise SystemExit(f"a custom shape needs --{' --'.join(m.replace('_', '-') for m in missing)} "
                                 "(or --model/--config to start from)")
            return [ModelShape("custom", **custom)]
        return [replace(s, name=s.name + " (modified)", **custom) for s in base]
    return base


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kt_kernel.doctor", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--threads", type=int, default=all_cores(), help="threads for the probes (default: all cores)")
    p.add_argument("--model", default="all",
                   help=f"preset for the prediction: {', '.join(PRESETS)}, {', '.join(PRESET_ALIASES)}, or all")
    p.add_argument("--config", default=None, help="a Hugging Face config.json to take the shape from")
    p.add_argument("--hidden", type=int, default=None, help="hidden size H")
    p.add_argument("--intermediate", type=int, default=None, help="expert intermediate size I")
    p.add_argument("--experts-per-token", type=int, default=None, help="routed experts per token K")
    p.add_argument("--moe-layers", type=int, default=None, help="MoE layers")
    p.add_argument("--seconds", type=float, default=0.5, help="seconds per instruction family")
    p.add_argument("--mib", type=int, default=1024, help="MiB read per bandwidth repeat")
    p.add_argument("--repeats", type=int, default=10, help="bandwidth repeats")
    p.add_argument("--pin", dest="pin", action="store_true", default=None,
                   help="pin probe thread i to the i-th allowed CPU (default: the engine's rule)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="leave the probe threads unpinned")
    p.add_argument("--json", default=None, help="also write everything to this file")
    args = p.parse_args(argv)
    for k in ("threads", "hidden", "intermediate", "experts_per_token", "moe_layers", "mib", "repeats"):
        v = getattr(args, k)
        if v is not None and v <= 0:
            p.error(f"--{k.replace('_', '-')} must be positive, got {v}")
    if not args.seconds > 0:
        p.error(f"--seconds must be positive, got {args.seconds}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    shapes = resolve_shapes(args)
    info = cpu_info()
    ident = cpu_identity()

    print("== CPU ==")
    print(f"brand: {info['brand']} ({info['vendor']})"
          + (f"; family {ident.get('cpu_family')} model {ident.get('model')} stepping {ident.get('stepping')}"
             if ident else "")
          + (f" ({ident['generation']})" if ident.get("generation") else ""))
    print(f"cores allowed to this process: {all_cores()}")
    print(f"features: {' '.join(info['flags'])}"
          + (f"; SVE vector length {info['sve_vector_bits']} bits" if info["sve_vector_bits"] else ""))

    nodes = topology()
    print("\n== NUMA ==")
    for n in nodes:
        print(f"node {n.id}: CPUs {','.join(map(str, n.cpus))}; allowed to this process "
              f"{','.join(map(str, n.allowed)) or 'none'}" + (f"; memory on node {n.mem_node} (simulated, "
                                                             f"{SIMULATE_ENV})" if n.mem_node != n.id else ""))
    print("KTMoEWrapper(numa_nodes=[ids], threadpool_count=len(ids)) puts sub-pool p's threads and its share of "
          "the weights on node ids[p]")

    print("\n== ISA tier ==")
    print(f"kt_kernel uses: {info['active_tier']} (best this CPU runs: {info['best_tier']}"
          f"{'; override ' + info['override'] if info['override'] else ''})")
    print(f"AMX: {info['amx']}")
    print(f"weight stream prefetch: {info['stream_prefetch']} (KT_KERNEL_PREFETCH=l1|l2 forces one)")

    how = {None: "pinned as the engine pins its workers", True: "--pin", False: "--no-pin"}[args.pin]
    print(f"\nmeasuring with {args.threads} threads ({how}) ...", flush=True)
    m = measure(args.threads, args.seconds, args.mib, args.repeats, args.pin)
    cpus = m["peaks"]["cpus"]
    print(f"  threads {'pinned to CPUs ' + ','.join(map(str, cpus)) if m['peaks']['pinned'] else 'unpinned'}")
    other = m["other_cores"]
    print(f"  took {m['seconds']:.1f} s; other processes kept {'?' if other is None else f'{other:.1f}'} cores "
          "busy meanwhile (figures taken beside them are lower)")
    print(f"  core clock estimate (dependent adds, 1 thread): {m['clock_ghz']:.2f} GHz")

    print("\n== Read bandwidth ==")
    for b in (m["bandwidth_1"], m["bandwidth_n"]):
        print(f"{b['threads']:>3} thread{'s' if b['threads'] > 1 else ' '}: best {b['best_gbps']:6.1f} GB/s, "
              f"median {b['median_gbps']:6.1f} GB/s  ({b['bytes'] / 2**20:.0f} MiB x {len(b['gbps'])}, "
              f"{b['loads']} loads{', huge pages advised' if b['huge_pages_advised'] else ''})")

    print(f"\n== Instruction peaks ({m['peaks']['threads']} threads at once, tier {m['peaks']['tier']}) ==")
    per = m["peaks"]["threads"] * m["clock_ghz"]
    for name, f in m["peaks"]["families"].items():
        if f["available"]:
            print(f"{name:20s} {f['instruction']:26s} best {f['best']:8.0f} {f['unit']:8s} median {f['median']:8.0f}"
                  f"  ({f['best'] / per:5.1f} ops/cycle/thread at the clock estimate; "
                  f"{f['ops_per_instruction']} ops/instr, {f['accumulators']} accumulators)")
        else:
            print(f"{name:20s} {f['instruction']:26s} {f['reason']}")

    bw_best, bw_med = m["bandwidth_n"]["best_gbps"], m["bandwidth_n"]["median_gbps"]
    print(f"\n== Predicted decode tokens/s (UPPER BOUND from read bandwidth alone: {args.threads} threads, "
          f"best {bw_best:.1f} / median {bw_med:.1f} GB/s) ==")
    print("tokens/s = bandwidth / (MoE layers x experts per token x 3HI x bytes per weight); routed experts only,")
    print("every weight read once from memory per token; compute, caches, attention and shared experts ignored.")
    methods = [f["method"] for f in formats()]
    predictions = []
    for s in shapes:
        print(f"{s.name}: {s.moe_layers} MoE layers, H={s.hidden}, I={s.intermediate}, top-{s.experts_per_token}"
              + (f" of {s.experts} experts" if s.experts else ""))
        for method in methods:
            bpw = bytes_per_weight(method)
            gb = bytes_per_token(s, bpw) / 1e9
            best, med = predict_decode_tok_s(s, bpw, bw_best), predict_decode_tok_s(s, bpw, bw_med)
            predictions.append({"model": s.name, "method": method, "bytes_per_weight": bpw, "gb_per_token": gb,
                                "tok_s_upper_bound": best, "tok_s_at_median_bandwidth": med})
            print(f"  {method:8s} {8 * bpw:5.2f} bits/weight  {gb:7.3f} GB/token  <= {best:8.1f} tok/s "
                  f"(at median bandwidth {med:.1f})")

    result = {"cpu_info": info, "cpu_identity": ident, "threads": args.threads, "pinned": m["peaks"]["pinned"],
              "measurements": m, "shapes": [asdict(s) for s in shapes], "predictions": predictions,
              "numa": [asdict(n) for n in nodes]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
