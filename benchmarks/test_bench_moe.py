"""pytest-benchmark suite: the cases of bench_moe.py on a small shape, with correctness asserted.

    pytest benchmarks/test_bench_moe.py                       # time them
    pytest benchmarks/test_bench_moe.py --benchmark-disable   # CI smoke test: each case runs once

Every timed case also checks its output against the fp32 torch reference on the same weights,
with the per-method bound of kt_kernel.torch_moe.REL_ERR_BOUNDS.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import kt_kernel
from kt_kernel import KTMoEWrapper
from kt_kernel.torch_moe import (REL_ERR_BOUNDS, TORCH_PEER, moe_forward, random_expert_weights, random_inputs,
                                 relative_error)

import bench_moe
from shapes import SMALL_SHAPES

SHAPE = SMALL_SHAPES["S"]
TOKENS = (1, 8, 64)
THREADS = bench_moe.all_cores()


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def weights():
    return random_expert_weights(SHAPE.E, SHAPE.H, SHAPE.I, seed=0)


@pytest.fixture(scope="module")
def cases(weights):
    """Per M: x, topk_ids, topk_weights and the fp32 reference output."""
    out = {}
    for M in TOKENS:
        x, ids, w = random_inputs(M, SHAPE.H, SHAPE.E, SHAPE.K, seed=0)
        out[M] = (x, ids, w, moe_forward(x, ids, w, *weights, compute_dtype=torch.float32, out_dtype=torch.float32))
    return out


@pytest.fixture(scope="module", params=list(kt_kernel.METHODS))
def wrapper(request, weights):
    w = KTMoEWrapper(layer_idx=0, num_experts=SHAPE.E, num_experts_per_tok=SHAPE.K, hidden_size=SHAPE.H,
                     moe_intermediate_size=SHAPE.I, cpuinfer_threads=THREADS, threadpool_count=1,
                     method=request.param)
    w.load_weights_from_tensors(*weights)
    return w


@pytest.mark.parametrize("M", TOKENS, ids=lambda m: f"M{m}")
def test_kt_moe(benchmark, wrapper, cases, M):
    x, ids, w, ref = cases[M]
    benchmark.group = f"{SHAPE.name} M={M}"
    benchmark.extra_info.update(method=wrapper.method, tier=wrapper.isa_tier, kernel=wrapper.kernel_name)
    out = benchmark(wrapper.forward, x, ids, w)
    assert out.shape == (M, SHAPE.H) and out.dtype == torch.bfloat16
    err = relative_error(out, ref)
    bound = REL_ERR_BOUNDS[wrapper.method]
    assert err < bound, (f"{wrapper.method} ({wrapper.kernel_name}) at M={M}: relative error {err:.4f} "
                         f"against the fp32 reference, bound {bound}")


@pytest.mark.parametrize("M", TOKENS, ids=lambda m: f"M{m}")
def test_torch_peer(benchmark, weights, cases, M):
    x, ids, w, ref = cases[M]
    benchmark.group = f"{SHAPE.name} M={M}"
    benchmark.extra_info.update(method=TORCH_PEER)
    out = benchmark(moe_forward, x, ids, w, *weights)
    err = relative_error(out, ref)
    assert err < REL_ERR_BOUNDS[TORCH_PEER], f"{TORCH_PEER} at M={M}: relative error {err:.4f}"


def test_reference_matches_token_loop():
    """The grouped reference equals the formula computed token by token, -1 slots skipped."""
    E, H, I, K, M = 6, 64, 32, 3, 5
    gate, up, down = random_expert_weights(E, H, I, seed=1, dtype=torch.float32)
    x, ids, w = random_inputs(M, H, E, K, seed=1)
    ids[1, 2] = -1
    ids[3, :] = -1
    got = moe_forward(x, ids, w, gate, up, down, out_dtype=torch.float32)
    want = torch.zeros(M, H)
    for t in range(M):
        xt = x[t].float()
        for k in range(K):
            e = int(ids[t, k])
            if e >= 0:
                want[t] += w[t, k] * (down[e] @ (F.silu(gate[e] @ xt) * (up[e] @ xt)))
    assert torch.equal(got[3], torch.zeros(H))
    assert relative_error(got, want) < 1e-5


def test_routing_is_distinct_and_seeded():
    ids, w = random_inputs(64, 16, 32, 8, seed=0)[1:]
    assert all(len(set(row.tolist())) == 8 for row in ids)
    assert torch.allclose(w.sum(1), torch.ones(64))
    ids8 = random_inputs(8, 16, 32, 8, seed=0)[1]
    assert torch.equal(ids[:8], ids8)  # row t does not depend on M


def test_cli_smoke(tmp_path, capsys):
    """bench_moe.py end to end on the small shape: table printed, JSON written, errors in bounds."""
    path = tmp_path / "out.json"
    bench_moe.main(["--shapes", SHAPE.name, "--tokens", "1,8", "--iters", "2", "--min-time", "0", "--warmup", "1",
                    "--bw-mib", "16", "--json", str(path)])
    text = capsys.readouterr().out
    assert "instruction peaks" in text and TORCH_PEER in text
    result = json.loads(path.read_text())
    rows = result["results"]
    assert {r["method"] for r in rows} == {TORCH_PEER, *kt_kernel.METHODS}
    assert len(rows) == 2 * (1 + len(kt_kernel.METHODS))
    for r in rows:
        assert r["ms"] > 0 and r["rel_err"] < REL_ERR_BOUNDS[r["method"]], r
