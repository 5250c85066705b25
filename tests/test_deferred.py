"""Deferred experts (max_deferred_experts_per_token = d; docs/design.md, "Deferred experts").

Per token, the K - d slots with the largest routing weights (all K slots ranked, ties keep the
earlier slot) make a layer's output; the other d are computed in the background and added, in
fp32 before rounding, to the output of the next forward of the wrapper with layer_idx + 1. The
references here split the slots on their own (SPLIT below, written from that rule) and add each
layer's deferred part one layer later, on the dequantized weights (tests/reference.py via
conftest's Moe).

The chains use layer indices from BASE up, which no other test file uses: a part left pending by
a failing test there cannot reach another file's layers.
"""
from __future__ import annotations

import pytest
import torch

import kt_kernel

BASE = 40
E, TOPK, H, I = 16, 4, 96, 64
CHUNK = 128
MS = [1, 300]  # decode; prefill in three chunks of CHUNK (the last one partial)


def split(ids: torch.Tensor, w: torch.Tensor, d: int):
    """(kept ids, deferred ids), -1 elsewhere: per row the K - d largest weights, ties to the
    earlier slot."""
    kept = torch.full_like(ids, -1)
    later = torch.full_like(ids, -1)
    K = ids.shape[1]
    for t in range(ids.shape[0]):
        order = sorted(range(K), key=lambda k: (-float(w[t, k]), k))
        for rank, k in enumerate(order):
            (kept if rank < K - d else later)[t, k] = ids[t, k]
    return kept, later


def make(moe, method, layer_idx: int, d: int, *, seed: int, hidden: int = H, **kw):
    shape = moe.Shape(E, TOPK, hidden, I)
    w = kt_kernel.KTMoEWrapper(layer_idx, E, TOPK, hidden, I, method=method, cpuinfer_threads=2,
                               chunked_prefill_size=CHUNK, max_deferred_experts_per_token=d, **kw)
    w.load_weights_from_tensors(*moe.weights(shape, seed))
    return w, shape


def refs(moe, layer, shape, x, ids, w, seed):
    """(dequantized-weight reference, fp32-weight reference) of one layer's part, float64."""
    return moe.references(layer, shape, x, ids, w, seed=seed)


def check(moe, out, ref_pair, method, what):
    fmt_name = moe.format_of(method)["name"]
    assert out.dtype == torch.bfloat16
    moe.assert_close_dequant(out, ref_pair[0], fmt_name, what=what)
    moe.assert_close_fp32(out, ref_pair[1], fmt_name, what=what)


@pytest.mark.parametrize("M", MS, ids=[f"M{m}" for m in MS])
@pytest.mark.parametrize("d", [1, TOPK - 1], ids=lambda d: f"d{d}")
def test_two_layers_sum_to_the_full_result(moe, method, tier, M, d):
    """Layers BASE (d) and BASE + 1 (d = 0), submitted and synced in order: the first returns its
    kept slots, the second its own full result plus the first's deferred slots, so the two outputs
    sum to the full result of both layers."""
    first, shape = make(moe, method, BASE, d, seed=0)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    assert first.isa_tier == tier
    x0, ids0, w0 = moe.inputs(shape, M, seed=M)
    x1, ids1, w1 = moe.inputs(shape, M, seed=M + 1)
    kept, later = split(ids0, w0, d)
    assert (kept >= 0).sum() == M * (TOPK - d) and (later >= 0).sum() == M * d

    first.submit_forward(x0, ids0, w0)
    out0 = first.sync_forward()
    second.submit_forward(x1, ids1, w1)
    out1 = second.sync_forward()

    r_kept = refs(moe, first, shape, x0, kept, w0, 0)
    r_later = refs(moe, first, shape, x0, later, w0, 0)
    r_second = refs(moe, second, shape, x1, ids1, w1, 1)
    check(moe, out0, r_kept, method, f"layer {BASE} (d={d}) on {tier}")
    r_sum = tuple(a + b for a, b in zip(r_second, r_later))
    check(moe, out1, r_sum, method, f"layer {BASE + 1} + deferred part on {tier}")
    # the deferred part is a real share of the result, not within the tolerance of nothing
    assert (r_later[0].norm() / r_sum[0].norm()) > 0.1

    # the sum of both outputs against the full result of both layers: each output is rounded to
    # bf16 on its own, so the bound adds theirs
    full = refs(moe, first, shape, x0, ids0, w0, 0)[0] + r_second[0]
    tol = moe.tolerance(moe.format_of(method)["name"])
    bound = (moe.OUTPUT_RTOL * (r_kept[0].abs() + r_sum[0].abs())
             + tol.dequant_atol * (r_kept[0].abs().max() + r_sum[0].abs().max()))
    err = (out0.double() + out1.double() - full).abs()
    assert (err <= bound).all(), f"sum of both outputs off the full result by {(err - bound).max():.3g}"


@pytest.mark.parametrize("ds", [(1, 2, 0), (0, 3, 0)], ids=["d1-d2-d0", "d0-d3-d0"])
def test_chain_matches_a_reference_that_adds_one_layer_later(moe, ds, threadpool_count):
    """Three layers over three steps with new inputs each step: layer i's output is its kept
    slots plus layer i-1's deferred slots of the same step; nothing crosses from one step to the
    next (the last layer defers nothing). With two sub-pools the part is added to their sum."""
    method = "AMXINT8"
    layers = [make(moe, method, BASE + i, d, seed=i, threadpool_count=threadpool_count) for i, d in enumerate(ds)]
    shape = layers[0][1]
    for step in range(3):
        M = [1, 37, 300][step]
        carried = None
        for i, ((layer, _), d) in enumerate(zip(layers, ds)):
            x, ids, w = moe.inputs(shape, M, seed=100 * step + i)
            out = layer.forward(x, ids, w)
            kernels = layer.last_kernels
            kept, later = split(ids, w, d)
            assert set(kernels) == {int(e) for e in kept[kept >= 0]}, "last_kernels are the kept experts'"
            expect = refs(moe, layer, shape, x, kept, w, i)
            if carried is not None:
                expect = tuple(a + b for a, b in zip(expect, carried))
            check(moe, out, expect, method, f"step {step} layer {BASE + i} (d={d})")
            carried = refs(moe, layer, shape, x, later, w, i) if d else None


def test_ties_keep_the_earlier_slot(moe):
    """Equal weights at the boundary: the earlier slot is kept, the later one deferred."""
    method = "BF16"
    first, shape = make(moe, method, BASE, 2, seed=0)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    x, _, _ = moe.inputs(shape, 3, seed=5)
    ids = torch.tensor([[3, 7, 1, 12], [5, 9, 2, 0], [4, 6, 8, 10]])
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25],   # all equal: slots 0, 1 kept
                      [0.1, 0.4, 0.4, 0.1],       # 0.4 twice kept; of the two 0.1, none kept
                      [0.2, 0.5, 0.2, 0.1]])      # 0.5 kept, then the first 0.2 (slot 0)
    kept = torch.tensor([[3, 7, -1, -1], [-1, 9, 2, -1], [4, 6, -1, -1]])
    later = torch.tensor([[-1, -1, 1, 12], [5, -1, -1, 0], [-1, -1, 8, 10]])
    assert torch.equal(torch.stack(split(ids, w, 2)), torch.stack((kept, later)))
    out0 = first.forward(x, ids, w)
    x1, ids1, w1 = moe.inputs(shape, 3, seed=6)
    out1 = second.forward(x1, ids1, w1)
    check(moe, out0, refs(moe, first, shape, x, kept, w, 0), method, "kept slots")
    expect = tuple(a + b for a, b in zip(refs(moe, second, shape, x1, ids1, w1, 1),
                                         refs(moe, first, shape, x, later, w, 0)))
    check(moe, out1, expect, method, "next layer + deferred slots")


def test_minus_one_and_gpu_experts_are_ranked_and_contribute_nothing(moe):
    """Every slot is ranked by its weight, whatever it holds: a GPU expert or a -1 among the
    largest weights takes a kept place, one among the smallest a deferred place; neither
    contributes on either side."""
    method = "AMXINT4"
    gpu = [e in (0, 1) for e in range(E)]  # slots 0 and 1 run on the GPU
    first, shape = make(moe, method, BASE, 1, seed=0, gpu_experts_mask=gpu)
    second, _ = make(moe, method, BASE + 1, 0, seed=1, gpu_experts_mask=gpu)
    x, _, _ = moe.inputs(shape, 4, seed=9)
    ids = torch.tensor([[0, 5, 6, 7],     # GPU slot has the smallest weight: 5, 6, 7 all kept
                        [1, 5, 6, 7],     # GPU slot has the largest: 7 (smallest) deferred
                        [-1, 8, 9, 10],   # -1 has the smallest: nothing deferred on the CPU
                        [-1, 8, 9, 10]])  # -1 has the largest: 10 deferred
    w = torch.tensor([[0.05, 0.9, 0.5, 0.3], [0.95, 0.6, 0.4, 0.2],
                      [0.01, 0.7, 0.6, 0.5], [0.99, 0.7, 0.6, 0.5]])
    kept, later = split(ids, w, 1)
    assert later.tolist() == [[0, -1, -1, -1], [-1, -1, -1, 7], [-1, -1, -1, -1], [-1, -1, -1, 10]]
    out0 = first.forward(x, ids, w)
    x1, ids1, w1 = moe.inputs(shape, 4, seed=10)
    out1 = second.forward(x1, ids1, w1)
    check(moe, out0, refs(moe, first, shape, x, kept, w, 0), method, "kept slots")
    r_later = refs(moe, first, shape, x, later, w, 0)
    assert [bool(r_later[0][t].abs().max() > 0) for t in range(4)] == [False, True, False, True]
    expect = tuple(a + b for a, b in zip(refs(moe, second, shape, x1, ids1, w1, 1), r_later))
    check(moe, out1, expect, method, "next layer + deferred slots")


@pytest.mark.parametrize("d", [-1, TOPK, TOPK + 3, 1.0, True, "1", None])
def test_deferred_count_is_validated(d):
    with pytest.raises(ValueError, match=rf"max_deferred_experts_per_token={d!r} must be an integer in "
                                         rf"0\.\.num_experts_per_tok-1={TOPK - 1}"):
        kt_kernel.KTMoEWrapper(BASE, E, TOPK, H, I, method="BF16", cpuinfer_threads=2,
                               max_deferred_experts_per_token=d)


def test_an_unconsumed_part_fails_the_next_forward(moe):
    """A layer whose deferred part no layer_idx + 1 forward took (here: the last layer with d > 0)
    raises at its next forward, naming the layer; the stale part is dropped, so the forward after
    that runs, and the next layer adds that forward's part only."""
    method = "AMXINT8"
    first, shape = make(moe, method, BASE, 1, seed=0)
    x, ids, w = moe.inputs(shape, 5, seed=1)
    first.forward(x, ids, w)
    with pytest.raises(RuntimeError, match=rf"layer {BASE}: the deferred experts of its previous forward "
                                           rf"\(max_deferred_experts_per_token=1, 5 tokens\) were never added.*"
                                           r"last MoE layer must use max_deferred_experts_per_token=0"):
        first.submit_forward(x, ids, w)
    assert first._pending is None  # nothing was queued
    x2, ids2, w2 = moe.inputs(shape, 5, seed=2)
    out0 = first.forward(x2, ids2, w2)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    x1, ids1, w1 = moe.inputs(shape, 5, seed=3)
    out1 = second.forward(x1, ids1, w1)
    kept, later = split(ids2, w2, 1)
    check(moe, out0, refs(moe, first, shape, x2, kept, w2, 0), method, "kept slots")
    expect = tuple(a + b for a, b in zip(refs(moe, second, shape, x1, ids1, w1, 1),
                                         refs(moe, first, shape, x2, later, w2, 0)))
    check(moe, out1, expect, method, "next layer + the latest deferred part")


@pytest.mark.parametrize("what", ["hidden", "tokens"])
def test_a_part_that_does_not_fit_the_next_layer_is_an_error(moe, what):
    method = "BF16"
    first, shape = make(moe, method, BASE, 1, seed=0)
    second, shape2 = make(moe, method, BASE + 1, 0, seed=1, hidden=2 * H if what == "hidden" else H)
    x, ids, w = moe.inputs(shape, 4, seed=1)
    first.forward(x, ids, w)
    M2 = 4 if what == "hidden" else 6
    x1, ids1, w1 = moe.inputs(shape2, M2, seed=2)
    with pytest.raises(ValueError, match=rf"layer {BASE + 1}: layer {BASE} left it the deferred experts of a "
                                         rf"forward of 4 tokens with hidden_size={H}, but this forward has {M2} "
                                         rf"tokens with hidden_size={shape2.hidden}"):
        second.forward(x1, ids1, w1)
    # the part was dropped: the next forwards of both layers run as if it never existed
    out1 = second.forward(x1, ids1, w1)
    check(moe, out1, refs(moe, second, shape2, x1, ids1, w1, 1), method, "without the dropped part")
    first.forward(x, ids, w)  # its previous part was dropped by the error: no "never added"


def test_an_error_of_the_deferred_job_reaches_the_next_layer(moe):
    """x with NaN in a row: both of the layer's jobs fail; its own sync raises, and so does the
    next layer's, naming the layer whose deferred experts failed."""
    method = "AMXINT4"
    first, shape = make(moe, method, BASE, 1, seed=0)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    x, ids, w = moe.inputs(shape, 3, seed=1)
    x[1, 7] = float("nan")
    with pytest.raises(ValueError, match="hidden_states row 1 contains NaN"):
        first.forward(x, ids, w)
    x1, ids1, w1 = moe.inputs(shape, 3, seed=2)
    with pytest.raises(RuntimeError, match=rf"layer {BASE + 1}: the deferred experts of layer {BASE} failed: "
                                           r"hidden_states row 1 contains NaN"):
        second.forward(x1, ids1, w1)
    check(moe, second.forward(x1, ids1, w1), refs(moe, second, shape, x1, ids1, w1, 1), method, "next step")


def test_a_destroyed_layer_takes_its_pending_part_with_it(moe):
    method = "BF16"
    first, shape = make(moe, method, BASE, 2, seed=0)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    x, ids, w = moe.inputs(shape, 2, seed=1)
    first.forward(x, ids, w)
    del first
    x1, ids1, w1 = moe.inputs(shape, 2, seed=2)
    check(moe, second.forward(x1, ids1, w1), refs(moe, second, shape, x1, ids1, w1, 1), method, "nothing added")
    again, _ = make(moe, method, BASE, 2, seed=0)
    again.forward(x, ids, w)  # the slot's pending flag went with the old wrapper
    second.forward(x1, ids1, w1)


def test_d0_layers_leave_outputs_alone(moe):
    """With d = 0 everywhere, consecutive layers are independent (the common path)."""
    method = "AMXINT8"
    first, shape = make(moe, method, BASE, 0, seed=0)
    second, _ = make(moe, method, BASE + 1, 0, seed=1)
    x, ids, w = moe.inputs(shape, 7, seed=1)
    check(moe, first.forward(x, ids, w), refs(moe, first, shape, x, ids, w, 0), method, "layer 0")
    x1, ids1, w1 = moe.inputs(shape, 7, seed=2)
    check(moe, second.forward(x1, ids1, w1), refs(moe, second, shape, x1, ids1, w1, 1), method, "layer 1")


def test_attach_defers_on_every_moe_layer_followed_by_one_with_cpu_experts(tiny):
    """The whole-model driver: d on each MoE layer whose next decoder layer has CPU experts, 0 on
    the others (the last MoE layer, or one followed by an all-GPU layer); the run defers."""
    pytest.importorskip("transformers")
    from kt_kernel.integrations.transformers import kt_layers, load_model
    from kt_kernel.models import generate_greedy, teacher_forced_logits

    def deferring(model):
        return {k.layer_idx: k.wrapper.max_deferred_experts_per_token for k in kt_layers(model) if k.wrapper}

    prompt = torch.arange(3, 40)
    ds = load_model(tiny("deepseek_v3"), "BF16", dtype=torch.float32, cpuinfer_threads=1,
                    max_deferred_experts_per_token=2)
    assert deferring(ds) == {1: 2, 2: 0}  # layer 0 is dense
    plain = load_model(tiny("deepseek_v3"), "BF16", dtype=torch.float32, cpuinfer_threads=1)
    assert not torch.equal(teacher_forced_logits(ds, prompt), teacher_forced_logits(plain, prompt))
    # decoding (M = 1 per step) defers per token as the teacher-forced pass does: the same logits up
    # to summation order (2^-7 of their scale, test_e2e_models.DECODE_RTOL)
    gen = generate_greedy(ds, prompt, 6)
    own = teacher_forced_logits(ds, torch.cat([prompt, torch.tensor(gen.tokens[:-1])]))[len(prompt) - 1:]
    assert float((gen.logits - own).abs().max() / own.abs().max()) <= 2.0**-7
    qwen = load_model(tiny("qwen3_moe"), "BF16", dtype=torch.float32, cpuinfer_threads=1,
                      max_deferred_experts_per_token=1, gpu_experts_mask={1: [True] * 32})
    assert deferring(qwen) == {0: 0}
    with pytest.raises(ValueError, match=r"max_deferred_experts_per_token=4 must be an integer in "
                                         r"0\.\.num_experts_per_tok-1=3"):
        load_model(tiny("qwen3_moe"), "BF16", dtype=torch.float32, max_deferred_experts_per_token=4)
