"""kt_kernel on aarch64, run by scripts/check_aarch64_python.sh under qemu-user on one CPU model:

1. cpu_info() reports the model's features (qemu's flag names) and its best tier, and set_isa
   refuses every ARM tier above that best one (the SVE vector length is not in cpu_info(): the C++
   driver of scripts/check_aarch64.sh checks it);
2. at every tier the model runs, every method's KTMoEWrapper (load_weights_from_tensors, forward)
   matches a torch fp32 layer on the original weights within the format's own bound
   (kt_kernel.formats()' layer_rel_err, the bound tests/conftest.py holds every tier to), at
   M = 1 (decode) and M = 37 (prefill: several tokens per expert, an odd row count).

Not a pytest file (it takes the model's expectations as arguments); prints one line per layer:
    python3 tests/aarch64/check_package.py --flags "asimd asimddp" --best neon_dotprod
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import kt_kernel
from kt_kernel import _ext

ARM_TIERS = ["neon", "neon_dotprod", "neon_i8mm", "neon_bf16", "sve"]  # lowest first
# Small enough for emulation, large enough for whole fp8 blocks (128) and several 16-channel panels.
E, K, H, I = 8, 2, 256, 256


def torch_layer(x, ids, wts, gate, up, down) -> torch.Tensor:
    """out[t] = sum_k wts[t,k] * down_e(silu(gate_e x_t) * up_e x_t), e = ids[t,k]; fp32."""
    out = torch.zeros(x.shape[0], down.shape[1])
    for e in ids.unique().tolist():
        t, k = (ids == e).nonzero(as_tuple=True)
        h = F.silu(x[t] @ gate[e].T) * (x[t] @ up[e].T)
        out.index_add_(0, t, wts[t, k, None] * (h @ down[e].T))
    return out


def check_features(flags: str, best: str) -> None:
    info = _ext.cpu_info()
    got = " ".join(info["flags"])
    assert got == flags, f"cpu_info() flags '{got}', expected '{flags}'"
    assert info["best_tier"] == best, f"best_tier {info['best_tier']!r}, expected {best!r}"
    expected_tiers = ["generic"] + ARM_TIERS[:ARM_TIERS.index(best) + 1]
    assert list(info["tiers"]) == expected_tiers, f"tiers {info['tiers']}, expected {expected_tiers}"
    for tier in ARM_TIERS[ARM_TIERS.index(best) + 1:]:
        try:
            kt_kernel.set_isa(tier)
        except RuntimeError as e:
            assert f"'{best}'" in str(e), f"set_isa({tier!r}) refused without naming the best tier: {e}"
        else:
            kt_kernel.set_isa(None)
            raise AssertionError(f"set_isa({tier!r}) accepted above the best tier {best!r}")
    print(f"features: {got}; tiers {' '.join(info['tiers'])}; "
          f"tiers above {best} refused")


def check_layers(tiers: list[str], methods: list[str]) -> int:
    g = torch.Generator().manual_seed(0)
    gate, up = torch.randn(E, I, H, generator=g) / H**0.5, torch.randn(E, I, H, generator=g) / H**0.5
    down = torch.randn(E, H, I, generator=g) / I**0.5
    bound = {f["method"]: f["layer_rel_err"] for f in kt_kernel.formats()}
    failures = 0
    for tier in tiers:
        kt_kernel.set_isa(tier)
        for method in methods:
            w = kt_kernel.KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=K, hidden_size=H,
                                       moe_intermediate_size=I, method=method, cpuinfer_threads=2)
            w.load_weights_from_tensors(gate, up, down)
            errs = []
            for m in (1, 37):
                x = torch.randn(m, H, generator=g).bfloat16()
                ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(m)])
                wts = torch.softmax(torch.randn(m, K, generator=g), dim=-1)
                ref = torch_layer(x.float(), ids, wts, gate, up, down)
                out = w.forward(x, ids, wts).float()
                errs.append(((out - ref).norm() / ref.norm()).item())
            ok = max(errs) <= bound[method] and w.isa_tier == tier
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {tier:13s} {method:8s} rel err M=1 {errs[0]:.4f}, M=37 {errs[1]:.4f} "
                  f"(bound {bound[method]}); layer tier {w.isa_tier}; {w.kernel_description}", flush=True)
            del w
    kt_kernel.set_isa(None)
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flags", required=True, help="the flags cpu_info() must report, space-separated")
    p.add_argument("--best", required=True, help="the best tier the model must get")
    p.add_argument("--tiers", default=None, help="comma-separated tiers to run layers at (default: all)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every format's)")
    a = p.parse_args()
    check_features(a.flags, a.best)
    tiers = a.tiers.split(",") if a.tiers else list(kt_kernel.cpu_info()["tiers"])
    methods = a.methods.split(",") if a.methods else [f["method"] for f in kt_kernel.formats()]
    failures = check_layers(tiers, methods)
    print(f"check_package: {'ok' if not failures else f'{failures} layer(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
