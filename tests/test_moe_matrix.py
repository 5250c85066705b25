"""The MoE operator through KTMoEWrapper: every method x every ISA tier of this CPU x M x GPU
experts x expert maps x sub-pools, against the reference on the dequantized weights (with the
kernels' activation rounding) and on the original fp32 weights; then the tiers against each other."""
from __future__ import annotations

import pytest
import torch

import kt_kernel

import reference

# E=8 slots, top-3, H=96 (three int4 groups: an odd number of K blocks), I=80: with two sub-pools
# I splits as [0, 48) [48, 80) in units of 16 and [0, 64) [64, 80) in units of 32 (AMXINT4), so
# each sub-pool has a slice and the int4 one ends in a partial group.
E, TOPK, H, I = 8, 3, 96, 80

MS = [1, 3, 64, 513]  # 513 > chunked_prefill_size=512: two chunks, the second of one token

GPU = {
    "nogpu": {},
    "gpu_count3": {"num_gpu_experts": 3},                       # slots 0, 1, 2
    "gpu_mask": {"gpu_experts_mask": (False, True, False, False, True, False, True, False)},
}
MAPS = {
    "identity": None,
    "permuted": (5, 2, 7, 2, 0, 6, 1, 3),  # logical 2 fills two slots, logical 4 none
}


@pytest.fixture(params=MS, ids=[f"M{m}" for m in MS])
def M(request):
    return request.param


@pytest.fixture(params=list(GPU), ids=list(GPU))
def gpu(request):
    return GPU[request.param]


@pytest.fixture(params=list(MAPS), ids=list(MAPS))
def pmap(request):
    return MAPS[request.param]


def test_moe_matrix(moe, output_digests, method, tier, M, gpu, pmap, threadpool_count, request):
    shape = moe.Shape(E, TOPK, H, I)
    layer = moe.layer(method, shape, pmap=pmap, threadpool_count=threadpool_count, cpuinfer_threads=2, **gpu)
    assert layer.isa_tier == tier
    x, ids, w = moe.inputs(shape, M, seed=M)
    out = moe.check(layer, shape, x, ids, w, pmap=pmap)
    output_digests.check(request.node.callspec.id, out)


# A model-sized layer (several K blocks, vector and tile kernels' full panels, I split unevenly)
# at decode, small-batch and prefill sizes: checked against the references and recorded bit for
# bit like the matrix.
LARGE = (16, 4, 1024, 352)


@pytest.mark.parametrize("m", [1, 17, 300], ids=lambda m: f"M{m}")
def test_model_sized_layer(moe, output_digests, method, tier, m, threadpool_count, request):
    shape = moe.Shape(*LARGE)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count, num_gpu_experts=2)
    assert layer.isa_tier == tier
    x, ids, w = moe.inputs(shape, m, seed=100 + m)
    out = moe.check(layer, shape, x, ids, w)
    output_digests.check("large-" + request.node.callspec.id, out)


@pytest.mark.parametrize("intermediate", [I, 40, 21, 160], ids=lambda i: f"I{i}")
def test_subpool_split_matches_reference(moe, method, threadpool_count, intermediate):
    """I is split across sub-pools as the reference assumes (units of the format's group: 32 for
    int4_g32, 128 for fp8_g128, 16 otherwise); an I of two units or more gives every sub-pool
    channels (the matrix's I = 80 for all but fp8_g128, whose I = 160 does)."""
    f = moe.format_of(method)
    layer = moe.layer(method, moe.Shape(E, TOPK, 64, intermediate), threadpool_count=threadpool_count)
    bounds = list(layer._layer.slice_bounds)
    assert bounds == reference.slice_bounds(intermediate, threadpool_count, f["group"], f["k_align"])
    if intermediate >= 2 * max(16, f["group"] or f["k_align"]):
        assert all(b1 > b0 for b0, b1 in zip(bounds[:-1], bounds[1:])), bounds


def test_dispatch_picks_the_kernel_table_row(moe, method, tier):
    """The layer runs the first kernel-table row for its format at or below the forced tier."""
    layer = moe.layer(method, moe.Shape(E, TOPK, H, I))
    row = moe.kernel_row(moe.format_of(method)["name"], tier)
    assert (layer.isa_tier, layer.kernel_name) == (tier, row["name"])
    assert layer._layer.act_format == row["act"]


def test_tiers_agree(moe, method, threadpool_count):
    """Every pair of tiers gives the same output up to the kernels' differences: tiers that round
    the activations alike agree within the dequantized-weight tolerance (two bf16 output roundings),
    the others (f32 vs bf16 activations) within the fp32-weight tolerance."""
    shape = moe.Shape(E, TOPK, H, I)
    fmt_name = moe.format_of(method)["name"]
    x, ids, w = moe.inputs(shape, 64, seed=7)
    ids[::5, 1] = -1
    outs = []
    for t in moe.tiers:
        kt_kernel.set_isa(t)
        layer = moe.layer(method, shape, threadpool_count=threadpool_count, num_gpu_experts=1)
        act = moe.rounding_class(moe.kernel_row(fmt_name, t)["act"])
        outs.append((t, act, layer.forward(x, ids, w).double()))
    kt_kernel.set_isa(None)
    assert not torch.isnan(outs[0][2]).any() and outs[0][2].abs().max() > 0
    for i, (t1, a1, o1) in enumerate(outs):
        for t2, a2, o2 in outs[i + 1:]:
            what = f"{method}: {t2} ({a2}) vs {t1} ({a1})"
            if a1 == a2:
                moe.assert_close_dequant(o2, o1, fmt_name, what=what, rtol=2 * moe.OUTPUT_RTOL)
            else:
                moe.assert_close_fp32(o2, o1, fmt_name, what=what)
