"""Bad input: every case is a Python exception of a clear type whose message names the argument
(and, where it helps, the valid values); none may crash the process or poison the layer."""
from __future__ import annotations

import re

import pytest
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.formats import formats as method_formats

E, TOPK, H, I, M = 8, 2, 64, 32, 4


@pytest.fixture(scope="module")
def shape(moe):
    return moe.Shape(E, TOPK, H, I)


@pytest.fixture
def layer(moe, shape):
    return moe.layer("BF16", shape)


@pytest.fixture
def good(moe, shape):
    return moe.inputs(shape, M, seed=1)


def _with(good, **change):
    x, ids, w = good
    args = {"hidden_states": x, "topk_ids": ids, "topk_weights": w}
    args.update(change)
    return args


def _meta(t):
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _noncontig(t):
    return t.t().contiguous().t()  # same shape and values, transposed strides


def _ids_filled(value, dtype=torch.int64):
    return lambda g: {"topk_ids": torch.full((M, TOPK), value, dtype=dtype)}


def _poison(i: int, value: float, what: str):
    """One element of hidden_states (row i) or topk_weights ([i, i % TOPK]) set to value."""
    if what == "hidden_states":
        return lambda g: {what: g[0].index_fill(0, torch.tensor([i]), value)}
    return lambda g: {what: g[2].index_put((torch.tensor([i]), torch.tensor([i % TOPK])), torch.tensor(value))}


# (change to the good inputs, exception, pattern the message must match)
FORWARD_CASES = [
    pytest.param(lambda g: {"hidden_states": torch.randn(M, H + 1)}, ValueError, r"hidden_states.*\(4, 65\)",
                 id="hidden_states_wrong_width"),
    pytest.param(lambda g: {"hidden_states": torch.randn(H)}, ValueError, "hidden_states", id="hidden_states_1d"),
    pytest.param(lambda g: {"topk_ids": torch.zeros(M, TOPK + 1, dtype=torch.int64)}, ValueError, "topk_ids",
                 id="topk_ids_wrong_width"),
    pytest.param(lambda g: {"topk_ids": torch.zeros(M + 1, TOPK, dtype=torch.int64)}, ValueError, "topk_ids",
                 id="topk_ids_wrong_rows"),
    pytest.param(lambda g: {"topk_weights": torch.rand(M, TOPK + 1)}, ValueError, "topk_weights",
                 id="topk_weights_wrong_shape"),
    pytest.param(lambda g: {"hidden_states": torch.ones(M, H, dtype=torch.int32)}, TypeError, "hidden_states.*int32",
                 id="hidden_states_int"),
    pytest.param(lambda g: {"hidden_states": g[0].double()}, TypeError, "hidden_states.*float64",
                 id="hidden_states_float64"),
    pytest.param(lambda g: {"topk_ids": g[1].float()}, TypeError, "topk_ids", id="topk_ids_float"),
    pytest.param(lambda g: {"topk_ids": g[1].to(torch.int16)}, TypeError, "topk_ids", id="topk_ids_int16"),
    pytest.param(lambda g: {"topk_weights": g[2].half()}, TypeError, "topk_weights", id="topk_weights_fp16"),
    pytest.param(lambda g: {"topk_weights": torch.ones(M, TOPK, dtype=torch.int64)}, TypeError, "topk_weights",
                 id="topk_weights_int"),
    pytest.param(lambda g: {"hidden_states": _meta(g[0])}, NotImplementedError, "hidden_states.*meta",
                 id="hidden_states_meta"),
    pytest.param(lambda g: {"topk_ids": _meta(g[1])}, NotImplementedError, "topk_ids", id="topk_ids_meta"),
    pytest.param(lambda g: {"topk_weights": _meta(g[2])}, NotImplementedError, "topk_weights",
                 id="topk_weights_meta"),
    pytest.param(lambda g: {"hidden_states": _noncontig(g[0])}, ValueError, "hidden_states.*contiguous",
                 id="hidden_states_noncontiguous"),
    pytest.param(lambda g: {"topk_ids": _noncontig(g[1])}, ValueError, "topk_ids.*contiguous",
                 id="topk_ids_noncontiguous"),
    pytest.param(lambda g: {"topk_weights": _noncontig(g[2])}, ValueError, "topk_weights.*contiguous",
                 id="topk_weights_noncontiguous"),
    pytest.param(lambda g: {"hidden_states": g[0].numpy()}, TypeError, "hidden_states", id="hidden_states_numpy"),
    pytest.param(_ids_filled(E), ValueError, r"topk_ids.*= 8 .*num_experts=8", id="topk_ids_equal_num_experts"),
    pytest.param(_ids_filled(-2, torch.int32), ValueError, r"topk_ids.*= -2 ", id="topk_ids_below_minus_one"),
    pytest.param(_ids_filled(2**40), ValueError, r"topk_ids.*= 1099511627776 ", id="topk_ids_int64_huge"),
    pytest.param(_poison(1, float("nan"), "topk_weights"), ValueError, r"topk_weights\[1, 1\]",
                 id="topk_weights_nan"),
    pytest.param(_poison(2, float("inf"), "topk_weights"), ValueError, r"topk_weights\[2, 0\]",
                 id="topk_weights_inf"),
    pytest.param(_poison(2, float("nan"), "hidden_states"), ValueError, "hidden_states row 2",
                 id="hidden_states_nan"),
    pytest.param(_poison(3, float("-inf"), "hidden_states"), ValueError, "hidden_states row 3",
                 id="hidden_states_inf"),
]


@pytest.mark.parametrize("change, exc, pattern", FORWARD_CASES)
def test_bad_forward_input(moe, shape, layer, good, change, exc, pattern):
    with pytest.raises(exc, match=pattern):
        layer.forward(**_with(good, **change(good)))
    assert layer._pending is None, "a rejected call must not stay pending"
    moe.check(layer, shape, *good)  # the layer still works


def test_nan_hidden_states_rejected_by_every_format(moe, method):
    shape = moe.Shape(E, TOPK, H, I)
    layer = moe.layer(method, shape)
    x, ids, w = moe.inputs(shape, 70, seed=2)
    x[65, 7] = float("nan")
    with pytest.raises(ValueError, match="hidden_states row 65"):
        layer.forward(x, ids, w)


@pytest.mark.parametrize("stream, exc", [(object(), TypeError), ("0", TypeError), (True, TypeError), (-1, ValueError)],
                         ids=["object", "str", "bool", "negative"])
def test_cuda_stream_of_a_wrong_kind(layer, good, stream, exc):
    with pytest.raises(exc, match="cuda_stream"):
        layer.forward(*good, cuda_stream=stream)
    with pytest.raises(exc, match="cuda_stream"):
        layer.submit_forward(*good, cuda_stream=stream)
    assert layer._pending is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_nonfinite_hidden_states_rejected_on_rows_without_cpu_experts(moe, dtype, bad):
    """A row whose ids are all -1 or all GPU experts is not computed, and is still checked."""
    shape = moe.Shape(E, TOPK, H, I)
    layer = moe.layer("BF16", shape, num_gpu_experts=2)
    x, ids, w = moe.inputs(shape, 12, seed=4)
    x = x.to(dtype)
    ids[3] = -1
    ids[8] = torch.arange(TOPK) % 2  # GPU experts (slots 0 and 1) only
    for row in (3, 8):
        bad_x = x.clone()
        bad_x[row, H - 1] = bad
        with pytest.raises(ValueError, match=f"hidden_states row {row} contains NaN or Inf"):
            layer.forward(bad_x, ids, w)
    moe.check(layer, shape, x.float(), ids, w)  # the layer still works



# ---- construction -------------------------------------------------------------------------

def _make(**kw):
    args = dict(layer_idx=0, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                cpuinfer_threads=2, method="BF16")
    args.update(kw)
    return kt_kernel.KTMoEWrapper(**args)


CONSTRUCT_CASES = {
    "unknown_method": ({"method": "AMXINT3"}, ValueError, "AMXINT3.*" + ".*".join(f["method"] for f in method_formats())),
    "threads_below_threadpool_count": ({"cpuinfer_threads": 1, "threadpool_count": 2}, ValueError,
                                       "cpuinfer_threads=1.*threadpool_count=2"),
    "threadpool_count_zero": ({"threadpool_count": 0}, ValueError, "threadpool_count"),
    "cpuinfer_threads_zero": ({"cpuinfer_threads": 0}, ValueError, "cpuinfer_threads"),
    "topk_above_num_experts": ({"num_experts_per_tok": E + 1}, ValueError, "num_experts_per_tok"),
    "hidden_size_zero": ({"hidden_size": 0}, ValueError, "hidden_size"),
    "intermediate_negative": ({"moe_intermediate_size": -32}, ValueError, "moe_intermediate_size"),
    "chunked_prefill_zero": ({"chunked_prefill_size": 0}, ValueError, "chunked_prefill_size"),
    "num_gpu_experts_above_num_experts": ({"num_gpu_experts": E + 1}, ValueError, "num_gpu_experts"),
    "gpu_experts_mask_wrong_length": ({"gpu_experts_mask": [True] * (E - 1)}, ValueError, "gpu_experts_mask.*7"),
    "num_gpu_experts_disagrees_with_mask": ({"num_gpu_experts": 3, "gpu_experts_mask": [True] * 2 + [False] * (E - 2)},
                                            ValueError, "num_gpu_experts"),
}


@pytest.mark.parametrize("case", list(CONSTRUCT_CASES), ids=list(CONSTRUCT_CASES))
def test_bad_construction(case):
    kw, exc, pattern = CONSTRUCT_CASES[case]
    with pytest.raises(exc, match=pattern):
        _make(**kw)


# ---- weights ------------------------------------------------------------------------------


def _weights(moe, shape, **change):
    gate, up, down = moe.weights(shape)
    ws = {"gate_proj": gate, "up_proj": up, "down_proj": down}
    ws.update(change)
    return ws


WEIGHT_CASES = {
    "gate_wrong_shape": (lambda w: {"gate_proj": torch.randn(E, I + 1, H)}, ValueError, "gate_proj"),
    "up_wrong_shape": (lambda w: {"up_proj": torch.randn(E, I, H - 1)}, ValueError, "up_proj"),
    "down_wrong_shape": (lambda w: {"down_proj": torch.randn(E, I, H)}, ValueError, "down_proj"),
    "down_wrong_expert_count": (lambda w: {"down_proj": torch.randn(E - 1, H, I)}, ValueError, "down_proj"),
    "gate_2d": (lambda w: {"gate_proj": torch.randn(I, H)}, ValueError, "gate_proj"),
    "mismatched_dtypes": (lambda w: {"up_proj": w["up_proj"].to(torch.bfloat16)}, TypeError,
                          "gate_proj.*up_proj.*down_proj"),
    "int_weights": (lambda w: {k: v.to(torch.int32) for k, v in w.items()}, TypeError, "gate_proj.*int32"),
    "meta_weights": (lambda w: {"down_proj": _meta(w["down_proj"])}, NotImplementedError, "down_proj"),
    "noncontiguous_weights": (lambda w: {"gate_proj": w["gate_proj"].transpose(1, 2).contiguous().transpose(1, 2)},
                              ValueError, "gate_proj.*contiguous"),
    "numpy_weights": (lambda w: {"gate_proj": w["gate_proj"].numpy()}, TypeError, "gate_proj"),
    "wrong_expert_count_without_map": (lambda w: {k: v[:-1].contiguous() for k, v in w.items()}, ValueError,
                                       "num_experts=8"),
    "nan_weights": (lambda w: {"up_proj": w["up_proj"].index_fill(0, torch.tensor([3]), float("nan"))},
                    ValueError, r"up.*expert 3"),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES), ids=list(WEIGHT_CASES))
def test_bad_weights(moe, case):
    shape = moe.Shape(E, TOPK, H, I)
    change, exc, pattern = WEIGHT_CASES[case]
    layer = _make()
    ws = _weights(moe, shape)
    with pytest.raises(exc, match=pattern):
        layer.load_weights_from_tensors(**_weights(moe, shape, **change(ws)))
    assert not layer._layer.loaded
    with pytest.raises(RuntimeError, match="load_weights_from_tensors"):
        layer.forward(*moe.inputs(shape, M))


MAP_CASES = {
    "too_short": (list(range(E - 1)), ValueError, "physical_to_logical_map has 7 entries"),
    "too_long": (list(range(E + 1)), ValueError, "physical_to_logical_map has 9 entries"),
    "value_too_large": ([0, 1, 2, 3, 4, 5, 6, 8], ValueError, r"physical_to_logical_map\[7\] = 8"),
    "value_negative": ([0, -1, 2, 3, 4, 5, 6, 7], ValueError, r"physical_to_logical_map\[1\] = -1"),
    "float_values": (torch.arange(E, dtype=torch.float32), TypeError, "physical_to_logical_map"),
}


@pytest.mark.parametrize("case", list(MAP_CASES), ids=list(MAP_CASES))
def test_bad_physical_to_logical_map(moe, case):
    shape = moe.Shape(E, TOPK, H, I)
    pmap, exc, pattern = MAP_CASES[case]
    layer = _make()
    with pytest.raises(exc, match=pattern):
        layer.load_weights_from_tensors(*moe.weights(shape), physical_to_logical_map=pmap)


# ---- call sequence ------------------------------------------------------------------------


def test_forward_before_weights_are_loaded(moe, shape, good):
    layer = _make()
    with pytest.raises(RuntimeError, match="load_weights_from_tensors"):
        layer.forward(*good)
    with pytest.raises(RuntimeError, match="load_weights_from_tensors"):
        layer.submit_forward(*good)
    assert layer._pending is None


def test_sync_without_submit(layer):
    with pytest.raises(RuntimeError, match="sync_forward.*without submit_forward"):
        layer.sync_forward()


def test_submit_twice(moe, shape, layer, good):
    layer.submit_forward(*good)
    with pytest.raises(RuntimeError, match="submit_forward called twice"):
        layer.submit_forward(*good)
    out = layer.sync_forward()  # the first call is still there and correct
    moe.check(layer, shape, *good, out=out)
    with pytest.raises(RuntimeError, match="sync_forward"):
        layer.sync_forward()


def test_unusable_options_say_so():
    with pytest.raises(ValueError, match=r"numa_nodes names node 5, which this machine does not have; its nodes: \["):
        _make(numa_nodes=[5])
    with pytest.raises(ValueError, match="load_weights needs weight_path"):
        _make().load_weights()


# ---- ISA selection ------------------------------------------------------------------------


def test_set_isa_unknown_tier_lists_the_valid_ones():
    before = kt_kernel.cpu_info()["override"]  # KT_KERNEL_ISA's, when the suite runs under one
    with pytest.raises(ValueError, match="avx9000.*" + ".*".join(re.escape(t) for t in _ext.all_tiers())):
        kt_kernel.set_isa("avx9000")
    assert kt_kernel.cpu_info()["override"] == before


@pytest.mark.parametrize("above", [t for t in _ext.all_tiers() if t not in kt_kernel.cpu_info()["tiers"]] or
                         [pytest.param("none", marks=pytest.mark.skip(reason="this CPU runs every tier"))])
def test_set_isa_above_the_cpu(above):
    best, active = kt_kernel.cpu_info()["best_tier"], kt_kernel.cpu_info()["active_tier"]
    with pytest.raises(RuntimeError, match=f"'{above}'.*at most '{best}'"):
        kt_kernel.set_isa(above)
    assert kt_kernel.cpu_info()["active_tier"] == active  # the refused request changed nothing
