"""Edge cases of the MoE operator: routing extremes, shape tails, GPU expert extremes, chunking,
input dtypes. Every result is compared with tests/reference.py or with an exactly equal run."""
from __future__ import annotations

import pytest
import torch

import kt_kernel

E, TOPK, H, I = 8, 4, 64, 48


def _shape(moe):
    return moe.Shape(E, TOPK, H, I)


# ---- routing extremes ---------------------------------------------------------------------


def test_one_expert_takes_every_token(moe, method, tier, threadpool_count):
    """Slot 5 is in every token's top-k, slots 0 and 1 share the rest, slots 2-4, 6, 7 get no token."""
    shape = _shape(moe)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count)
    x, ids, w = moe.inputs(shape, 67, seed=1)
    ids[:, 0] = 5
    ids[:, 1:] = torch.randint(0, 2, (67, TOPK - 1), generator=torch.Generator().manual_seed(2))
    moe.check(layer, shape, x, ids, w)


def test_every_row_count_from_1_to_8(moe, method, tier, threadpool_count):
    """Slot e takes e + 1 of 36 top-1 tokens, in shuffled order: every way the drivers cut an
    expert's rows into blocks (whole blocks, a lone tail, blocks of unequal sizes, one pass or one
    per panel half) meets the reference."""
    shape = moe.Shape(E, 1, H, I)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count)
    slots = torch.repeat_interleave(torch.arange(E), torch.arange(1, E + 1))
    x, ids, w = moe.inputs(shape, len(slots), seed=10)
    ids[:, 0] = slots[torch.randperm(len(slots), generator=torch.Generator().manual_seed(11))]
    moe.check(layer, shape, x, ids, w)


def test_same_expert_in_every_slot_of_a_token(moe, method, tier):
    """A slot repeated within a token's top-k contributes once per occurrence."""
    shape = _shape(moe)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, 9, seed=3)
    ids[:] = 6
    moe.check(layer, shape, x, ids, w)


def test_ids_minus_one_contribute_nothing(moe, method, tier, threadpool_count):
    shape = _shape(moe)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count)
    x, ids, w = moe.inputs(shape, 40, seed=4)
    ids[::3, 0] = -1
    ids[1::4, 2:] = -1
    ids[7] = -1  # a token with no expert at all
    out = moe.check(layer, shape, x, ids, w)
    assert (out[7] == 0).all(), "a token whose ids are all -1 must give an all-zero row"
    # -1 with any routing weight, even a huge one, is ignored
    w2 = w.clone()
    w2[ids == -1] = 1e30
    assert torch.equal(layer.forward(x, ids, w2), out)


def test_duplicated_rows_give_identical_outputs(moe, method, tier, threadpool_count):
    """Identical tokens (same x, ids, weights) give bitwise identical rows, equal to the row of a
    single-token call, wherever they sit in a batch."""
    shape = _shape(moe)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count)
    x, ids, w = moe.inputs(shape, 37, seed=5)
    for r in (3, 4, 11, 12, 13, 36):
        x[r], ids[r], w[r] = x[0], ids[0], w[0]
    out = moe.check(layer, shape, x, ids, w)
    single = layer.forward(x[:1].clone(), ids[:1].clone(), w[:1].clone())
    for r in (0, 3, 4, 11, 12, 13, 36):
        assert torch.equal(out[r], single[0]), f"row {r} differs from the single-token result"


# ---- shape tails --------------------------------------------------------------------------

TAIL_SHAPES = [
    (72, 40),   # H: 4.5 panels, 2.25 int4 groups; I: splits [0, 32) [32, 40) for tp2
    (33, 21),   # I=21 < 32: with tp2 the AMXINT4 second sub-pool owns no channel
    (200, 160),  # several panels and groups, two full int4 slices
]


@pytest.mark.parametrize("hi", TAIL_SHAPES, ids=[f"H{h}I{i}" for h, i in TAIL_SHAPES])
def test_hidden_and_intermediate_tails(moe, method, tier, threadpool_count, hi):
    h, i = hi
    shape = moe.Shape(6, 2, h, i)
    layer = moe.layer(method, shape, threadpool_count=threadpool_count)
    for M in (1, 5, 70):
        x, ids, w = moe.inputs(shape, M, seed=M)
        moe.check(layer, shape, x, ids, w)


def test_fewer_logical_experts_than_slots(moe, method):
    """Weights of 5 logical experts fill 8 slots (redundant copies), map read per slot."""
    shape = moe.Shape(8, 3, 64, 48, logical_experts=5)
    pmap = (4, 0, 1, 4, 2, 3, 0, 4)
    layer = moe.layer(method, shape, pmap=pmap)
    x, ids, w = moe.inputs(shape, 50, seed=6)
    moe.check(layer, shape, x, ids, w, pmap=pmap)


def test_zero_tokens(moe, method):
    shape = _shape(moe)
    layer = moe.layer(method, shape)
    out = layer.forward(torch.empty(0, H), torch.empty(0, TOPK, dtype=torch.int64), torch.empty(0, TOPK))
    assert out.shape == (0, H) and out.dtype == torch.bfloat16


# ---- GPU expert extremes ------------------------------------------------------------------


def test_zero_gpu_experts(moe, method, tier):
    """num_gpu_experts=0 and an all-False mask are the same layer as no GPU experts at all."""
    shape = _shape(moe)
    x, ids, w = moe.inputs(shape, 30, seed=8)
    plain = moe.layer(method, shape)
    a = moe.layer(method, shape, num_gpu_experts=0)
    b = moe.layer(method, shape, gpu_experts_mask=[False] * E)
    ref = moe.check(plain, shape, x, ids, w)
    assert a.num_gpu_experts == b.num_gpu_experts == 0
    assert torch.equal(a.forward(x, ids, w), ref) and torch.equal(b.forward(x, ids, w), ref)
    assert a.weight_bytes == b.weight_bytes == plain.weight_bytes > 0


@pytest.mark.parametrize("how", ["num_gpu_experts", "gpu_experts_mask"])
def test_all_gpu_experts_give_exact_zero(moe, method, tier, threadpool_count, how):
    shape = _shape(moe)
    kw = {"num_gpu_experts": E} if how == "num_gpu_experts" else {"gpu_experts_mask": [True] * E}
    layer = moe.layer(method, shape, threadpool_count=threadpool_count, **kw)
    x, ids, w = moe.inputs(shape, 33, seed=9)
    out = layer.forward(x, ids, w)
    assert out.shape == (33, H) and (out == 0).all(), "every expert is on the GPU: the CPU output must be 0"
    assert layer.weight_bytes == 0, f"GPU experts' weights must not be kept on the host ({layer.weight_bytes} bytes)"


def test_gpu_experts_hold_no_host_memory(moe, method):
    """Each CPU slot holds the same packed size; GPU slots hold none."""
    shape = _shape(moe)
    full = moe.layer(method, shape).weight_bytes
    for kw in ({"num_gpu_experts": 3}, {"gpu_experts_mask": [i % 2 == 0 for i in range(E)]}):
        layer = moe.layer(method, shape, **kw)
        n_cpu = E - layer.num_gpu_experts
        assert layer.weight_bytes * E == full * n_cpu, (kw, layer.weight_bytes, full)


def test_gpu_expert_tokens_only_give_zero_rows(moe, method):
    """Tokens routed only to GPU slots get exact zeros; the others match the reference."""
    shape = _shape(moe)
    layer = moe.layer(method, shape, num_gpu_experts=4)
    x, ids, w = moe.inputs(shape, 20, seed=10)
    ids[5] = torch.tensor([0, 1, 2, 3])
    ids[6] = torch.tensor([3, -1, 1, -1])
    out = moe.check(layer, shape, x, ids, w)
    assert (out[5] == 0).all() and (out[6] == 0).all()


# ---- chunked prefill ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 64], ids=lambda c: f"chunk{c}")
def test_chunked_prefill_equals_unchunked(moe, method, tier, threadpool_count, chunk):
    """chunked_prefill_size < M runs the call in chunks; the result is bitwise the unchunked one."""
    shape = _shape(moe)
    x, ids, w = moe.inputs(shape, 100, seed=11)
    ids[::9, 1] = -1
    whole = moe.layer(method, shape, threadpool_count=threadpool_count, chunked_prefill_size=512)
    chunked = moe.layer(method, shape, threadpool_count=threadpool_count, chunked_prefill_size=chunk)
    a, b = whole.forward(x, ids, w), chunked.forward(x, ids, w)
    diff = (a.float() - b.float()).abs()
    assert torch.equal(a, b), (
        f"chunked_prefill_size={chunk} changes {int((diff > 0).sum())} of {a.numel()} outputs "
        f"(max |diff| {diff.max().item():.3g}, first at {tuple(torch.nonzero(diff)[0].tolist())})")


# ---- input dtypes -------------------------------------------------------------------------


def test_int32_and_int64_ids_agree(moe, method, tier):
    shape = _shape(moe)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, 25, seed=12)
    ids[2, 1] = -1
    a = layer.forward(x, ids.to(torch.int64), w)
    b = layer.forward(x, ids.to(torch.int32), w)
    assert torch.equal(a, b)
    moe.check(layer, shape, x, ids, w, out=b)


def test_bf16_routing_weights(moe, method, tier):
    """bf16 weights give exactly the result of the same values in fp32."""
    shape = _shape(moe)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, 25, seed=13)
    wb = w.to(torch.bfloat16)
    out = layer.forward(x, ids, wb)
    assert torch.equal(out, layer.forward(x, ids, wb.float()))
    moe.check(layer, shape, x, ids, wb.float(), out=out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_hidden_states(moe, method, tier, dtype):
    """bf16 / fp16 hidden states give exactly the result of the same values in fp32."""
    shape = _shape(moe)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, 25, seed=14)
    xh = x.to(dtype)
    out = layer.forward(xh, ids, w)
    assert torch.equal(out, layer.forward(xh.float(), ids, w))
    moe.check(layer, shape, xh.float(), ids, w, out=out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_weights_load_like_fp32(moe, method, dtype):
    """Loading bf16 / fp16 weights equals loading the same values as fp32."""
    shape = _shape(moe)
    gate, up, down = (t.to(dtype) for t in moe.weights(shape))
    layers = []
    for ws in ((gate, up, down), (gate.float(), up.float(), down.float())):
        layer = kt_kernel.KTMoEWrapper(0, E, TOPK, H, I, cpuinfer_threads=2, method=method)
        layer.load_weights_from_tensors(*ws)
        layers.append(layer)
    x, ids, w = moe.inputs(shape, 20, seed=15)
    assert torch.equal(layers[0].forward(x, ids, w), layers[1].forward(x, ids, w))


def test_reloading_weights_replaces_them(moe, method):
    """A second load_weights_from_tensors replaces the first (here: a different expert map)."""
    shape = _shape(moe)
    layer = kt_kernel.KTMoEWrapper(0, E, TOPK, H, I, cpuinfer_threads=2, method=method)
    layer.load_weights_from_tensors(*moe.weights(shape))
    pmap = (7, 6, 5, 4, 3, 2, 1, 0)
    layer.load_weights_from_tensors(*moe.weights(shape), physical_to_logical_map=pmap)
    x, ids, w = moe.inputs(shape, 20, seed=16)
    moe.check(layer, shape, x, ids, w, pmap=pmap)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("M", [0, 1, 3])
def test_half_hidden_states_of_an_odd_byte_count(moe, method, dtype, M):
    """M x H half values of 2 mod 4 bytes (odd H) and empty calls: the staged ids and routing
    weights after x stay aligned (scripts/sanitize.sh runs this under UBSan)."""
    shape = moe.Shape(E, TOPK, 63, I)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, M, seed=17)
    xh = x.to(dtype)
    out = layer.forward(xh, ids, w)
    assert torch.equal(out, layer.forward(xh.float(), ids, w))
    moe.check(layer, shape, xh.float(), ids, w, out=out)
