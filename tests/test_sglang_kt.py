"""The names the KT fork of SGLang (sglang-kt 0.7.2) imports and the keywords it constructs
KTMoEWrapper with (its kt_ep_wrapper.py, inference path), tested directly: sglang-kt itself is not
installed here (its wheel needs its own sgl_kernel payload and a CUDA torch)."""
from __future__ import annotations

import pytest
import torch

import reference


def test_sglang_kt_imports_both_names():
    from kt_kernel import KTMoEWrapper, generate_gpu_experts_masks  # noqa: F401  (sglang-kt's import line)


def _chosen_are_the_most_active(freq: torch.Tensor, mask: torch.Tensor) -> bool:
    chosen, rest = freq[mask], freq[~mask]
    return chosen.numel() == 0 or rest.numel() == 0 or bool(chosen.min() >= rest.max())


@pytest.mark.parametrize("n", [0, 1, 7, 24, 32])
def test_masks_pick_the_globally_most_active_experts(n):
    from kt_kernel import generate_gpu_experts_masks

    freq = torch.rand(4, 8, generator=torch.Generator().manual_seed(n))
    freq[0] *= 10  # a hot layer: the count is global, so it takes more than its share
    mask = generate_gpu_experts_masks(freq, n)
    assert mask.dtype == torch.bool and mask.device.type == "cpu" and mask.shape == (4, 8)
    assert int(mask.sum()) == n
    assert _chosen_are_the_most_active(freq, mask)
    mask[0].copy_(torch.ones(8, dtype=torch.bool))  # writable: sglang-kt edits the masks in place
    assert bool(mask[0].all())


def test_masks_break_ties_by_position():
    from kt_kernel import generate_gpu_experts_masks

    mask = generate_gpu_experts_masks(torch.ones(2, 3), 4)
    assert mask.tolist() == [[True, True, True], [True, False, False]]


@pytest.mark.parametrize("freq, n, error, words", [
    ([1.0, 2.0], 1, ValueError, "activation_freq has shape"),
    (torch.ones(2, 2, dtype=torch.bool), 1, TypeError, "activation_freq has dtype"),
    (torch.ones(2, 2), 5, ValueError, "num_gpu_experts_total=5"),
    (torch.ones(2, 2), -1, ValueError, "num_gpu_experts_total=-1"),
    (torch.full((2, 2), float("nan")), 1, ValueError, "NaN"),
])
def test_mask_arguments_are_checked(freq, n, error, words):
    from kt_kernel import generate_gpu_experts_masks

    if isinstance(freq, list):
        freq = torch.tensor(freq)
    with pytest.raises(error, match=words):
        generate_gpu_experts_masks(freq, n)


E, K, H, I = 8, 2, 64, 32


def _sglang_kt_wrapper(mask, **extra):
    from kt_kernel import KTMoEWrapper

    # the keyword set of sglang-kt's inference path; no num_gpu_experts
    kwargs = dict(layer_idx=0, num_experts=E, num_experts_per_tok=K, hidden_size=H, moe_intermediate_size=I,
                  gpu_experts_mask=mask, cpuinfer_threads=2, threadpool_count=2, numa_nodes=None, weight_path=None,
                  chunked_prefill_size=16, swiglu_limit=0.0, swiglu_alpha=0.0, method="BF16",
                  max_deferred_experts_per_token=0)
    kwargs.update(extra)
    return KTMoEWrapper(**kwargs)


def test_sglang_kt_keywords_run_the_cpu_experts_of_the_mask(moe):
    g = torch.Generator().manual_seed(3)
    gate, up = torch.randn(E, I, H, generator=g) / H**0.5, torch.randn(E, I, H, generator=g) / H**0.5
    down = torch.randn(E, H, I, generator=g) / I**0.5
    mask = torch.tensor([True, False, False, True, False, True, False, False])
    w = _sglang_kt_wrapper(mask)
    assert w.gpu_experts_mask.tolist() == mask.tolist()
    w.load_weights_from_tensors(gate, up, down)
    x = torch.randn(20, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(20)])
    weights = torch.rand(20, K, generator=g)
    out = w.forward(x, ids, weights)
    ref = reference.moe_forward(x, ids, weights, gate, up, down, gpu_mask=mask.tolist())
    moe.assert_close_fp32(out, ref, "bf16", "sglang-kt keyword set")


def test_clamped_swiglu_is_taken(moe):
    """sglang-kt passes gpt-oss's clamp and slope as swiglu_limit / swiglu_alpha: the layer
    computes g sigmoid(alpha g) (u + 1) on the clamped g and u (tests/test_mxfp4.py covers it on
    every method and tier)."""
    torch.manual_seed(0)
    gate, up, down = torch.randn(E, I, H) * 0.3, torch.randn(E, I, H) * 0.3, torch.randn(E, H, I) / I**0.5
    w = _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), swiglu_limit=1.0, swiglu_alpha=1.702)
    assert (w.swiglu_limit, w.swiglu_alpha) == (1.0, 1.702)
    w.load_weights_from_tensors(gate, up, down)
    x = torch.randn(3, H)
    ids = torch.stack([torch.randperm(E)[:K] for _ in range(3)])
    weights = torch.rand(3, K)
    ref = reference.moe_forward(x, ids, weights, gate, up, down, glu={"limit": 1.0, "alpha": 1.702})
    moe.assert_close_fp32(w.forward(x, ids, weights), ref, "bf16", "clamped SwiGLU")


@pytest.mark.parametrize("kw,err", [({"swiglu_limit": -1.0}, ValueError), ({"swiglu_alpha": float("nan")}, TypeError),
                                    ({"swiglu_limit": "7"}, TypeError)])
def test_bad_swiglu_values_are_refused_by_name(kw, err):
    with pytest.raises(err, match=next(iter(kw))):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), **kw)


def test_amxbf16_is_bf16():
    assert _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), method="AMXBF16").method == "BF16"


@pytest.mark.parametrize("method", ["AMXFP8", "MXFP8"])
def test_fp8_methods_are_refused_by_name(method):
    with pytest.raises(NotImplementedError, match=f"method '{method}'.*BF16 \\(also AMXBF16\\), AMXINT8, AMXINT4"):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), method=method)


@pytest.mark.parametrize("sft_keyword", [{"mode": "sft"}, {"lora_rank": 8}])
def test_sft_keywords_stay_unknown(sft_keyword):
    """sglang-kt builds SFT wrappers only for expert LoRA, after probing kt_kernel.sft (absent)."""
    with pytest.raises(TypeError, match=next(iter(sft_keyword))):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), **sft_keyword)
    with pytest.raises(ImportError):
        import kt_kernel.sft  # noqa: F401


def _tiny_layer_weights(path, layer_id, num_experts):
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    stack = lambda p: torch.stack([tensors[f"model.layers.{layer_id}.mlp.experts.{e}.{p}_proj.weight"].float()
                                   for e in range(num_experts)])
    return stack("gate"), stack("up"), stack("down")


def test_mask_edited_in_place_takes_effect_at_the_next_forward(moe):
    """sglang-kt's dynamic placement: ``wrapper.gpu_experts_mask.copy_(new)`` between forwards;
    experts newly on the CPU are read from weight_path (here an HF checkpoint, quantized at load)."""
    from kt_kernel import KTMoEWrapper
    from kt_kernel.models import build_tiny_model, tiny_config

    path = build_tiny_model("qwen3_moe")
    cfg = tiny_config("qwen3_moe")
    E_, K_, H_, I_ = cfg.num_experts, cfg.num_experts_per_tok, cfg.hidden_size, cfg.moe_intermediate_size
    first = torch.zeros(E_, dtype=torch.bool)
    first[:E_ // 2] = True
    w = KTMoEWrapper(layer_idx=1, num_experts=E_, num_experts_per_tok=K_, hidden_size=H_, moe_intermediate_size=I_,
                     gpu_experts_mask=first.clone(), cpuinfer_threads=2, threadpool_count=2, numa_nodes=None,
                     weight_path=str(path), chunked_prefill_size=16, swiglu_limit=0.0, swiglu_alpha=0.0,
                     method="BF16", max_deferred_experts_per_token=0)
    w.load_weights(torch.arange(E_))
    gate, up, down = _tiny_layer_weights(path, 1, E_)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, H_, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E_, generator=g)[:K_] for _ in range(24)])
    weights = torch.rand(24, K_, generator=g)
    for mask in (first, ~first, torch.arange(E_) % 3 == 0):
        w.gpu_experts_mask.copy_(mask)
        out = w.forward(x, ids, weights)
        ref = reference.moe_forward(x, ids, weights, gate, up, down, gpu_mask=mask.tolist())
        moe.assert_close_fp32(out, ref, "bf16", f"after moving to {mask.int().tolist()}")
        assert w.num_gpu_experts == int(mask.sum())


def test_mask_edit_without_weight_path_says_how_to_reload():
    w = _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool))
    g = torch.Generator().manual_seed(1)
    w.load_weights_from_tensors(torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g),
                                torch.randn(E, H, I, generator=g))
    w.gpu_experts_mask[2] = True
    x = torch.randn(4, H, generator=g).bfloat16()
    with pytest.raises(RuntimeError, match=r"gpu_experts_mask changed \(slots \[2\]\).*load_weights"):
        w.forward(x, torch.zeros(4, K, dtype=torch.int64) + torch.arange(K), torch.ones(4, K))


# ---- sglang-kt's other inference calls ------------------------------------------------------
#
# submit_forward_inference / sync_forward_inference(stream) (its expert-LoRA serving path),
# wrapper.cpu_infer.sync() (a drain before its FP8 layerwise prefetch) and
# submit_write_weight_scale_to_buffer / sync_write_weight_scale_to_buffer (its layerwise GPU
# prefill: each CPU expert written into double-buffered host buffers, one per TP rank, then copied
# to the GPU). CPU tensors' data_ptr() stand in for its pinned shared-memory buffers.

WRITE = dict(E=8, logical=6, K=2, H=64, I=96)  # I = 3 * 32: sub-pool slices straddle the TP ranks
WRITE_PMAP = [0, 1, 2, 3, 4, 5, 1, 4]  # slots 6 and 7 repeat logical experts 1 and 4
WRITE_MASK = torch.tensor([True, False, False, True, False, False, False, False])


def _write_layer(moe, method):
    from kt_kernel import KTMoEWrapper

    shape = moe.Shape(WRITE["E"], WRITE["K"], WRITE["H"], WRITE["I"], logical_experts=WRITE["logical"])
    w = KTMoEWrapper(layer_idx=0, num_experts=WRITE["E"], num_experts_per_tok=WRITE["K"], hidden_size=WRITE["H"],
                     moe_intermediate_size=WRITE["I"], gpu_experts_mask=WRITE_MASK.clone(), cpuinfer_threads=2,
                     threadpool_count=2, numa_nodes=None, weight_path=None, chunked_prefill_size=16,
                     swiglu_limit=0.0, swiglu_alpha=0.0, method=method, max_deferred_experts_per_token=0)
    w.load_weights_from_tensors(*moe.weights(shape), physical_to_logical_map=torch.tensor(WRITE_PMAP))
    # a sub-pool's slice of I straddles a TP rank's share at tp 2 or 3 (bounds [0, 48 or 64, 96]),
    # where the format's sub-pool unit leaves two slices (fp8_g128's 128 keeps I = 96 whole)
    f = moe.format_of(method)
    if WRITE["I"] >= 2 * max(16, f["group"] or f["k_align"]):
        assert any(w._layer.slice_bounds[1] % (WRITE["I"] // tp) for tp in (2, 3))
    return w, shape


def _rank_buffers(tp):
    """Per rank: w13 bf16 [2*I/tp, H] and w2 bf16 [H, I/tp], NaN where nothing was written."""
    Ir, H = WRITE["I"] // tp, WRITE["H"]
    return ([torch.full((2 * Ir, H), float("nan"), dtype=torch.bfloat16) for _ in range(tp)],
            [torch.full((H, Ir), float("nan"), dtype=torch.bfloat16) for _ in range(tp)])


def _expected_rank_buffers(deq, logical, tp):
    """SGLang's TP split of one expert: rank r holds channels [r*Ir, (r+1)*Ir) of gate and up
    (stacked) and the same columns of down, rounded to bf16."""
    gate, up, down = (t[logical] for t in deq)
    Ir = WRITE["I"] // tp
    w13 = [torch.cat([gate[r * Ir:(r + 1) * Ir], up[r * Ir:(r + 1) * Ir]]).bfloat16() for r in range(tp)]
    w2 = [down[:, r * Ir:(r + 1) * Ir].bfloat16() for r in range(tp)]
    return w13, w2


def _ptrs(ts):
    return [t.data_ptr() for t in ts]


@pytest.mark.parametrize("tp", [1, 2, 3])
def test_write_weight_scale_to_buffer_writes_the_loaded_weights_split_by_rank(moe, method, tp):
    """Each CPU slot (redundant slots included) written as sglang-kt does, double-buffered: two
    writes queued, then one sync; bit-identical to the weights as loaded (the package's quantizer,
    the reference's dequantizer), rounded to bf16 and split as SGLang's TP ranks hold them. A
    forward queued before the writes is unaffected by them."""
    w, shape = _write_layer(moe, method)
    deq = moe.dequantized(moe.format_of(method)["name"], shape)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(12, WRITE["H"], generator=g).bfloat16()
    ids = torch.stack([torch.randperm(WRITE["E"], generator=g)[:WRITE["K"]] for _ in range(12)]).to(torch.int32)
    weights = torch.rand(12, WRITE["K"], generator=g)
    alone = w.forward(x, ids, weights).clone()
    cpu_slots = [e for e in range(WRITE["E"]) if not WRITE_MASK[e]]
    slots = [_rank_buffers(tp), _rank_buffers(tp)]  # sglang-kt's double buffer
    zeros = [0] * tp
    w.submit_forward(x, ids, weights, 0)
    for i in range(0, len(cpu_slots), 2):
        pair = cpu_slots[i:i + 2]
        for e, (w13, w2) in zip(pair, slots):
            for b in w13 + w2:
                b.fill_(float("nan"))
            w.submit_write_weight_scale_to_buffer(tp, e, _ptrs(w13), zeros, _ptrs(w2), zeros)
        w.sync_write_weight_scale_to_buffer()
        for e, (w13, w2) in zip(pair, slots):
            want13, want2 = _expected_rank_buffers(deq, WRITE_PMAP[e], tp)
            for r in range(tp):
                assert torch.equal(w13[r].view(torch.int16), want13[r].view(torch.int16)), f"slot {e} w13 rank {r}"
                assert torch.equal(w2[r].view(torch.int16), want2[r].view(torch.int16)), f"slot {e} w2 rank {r}"
    assert torch.equal(w.sync_forward(x, 0), alone)


def test_sync_write_without_a_write_returns():
    w = _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool))
    w.sync_write_weight_scale_to_buffer()


def _bad_write_calls():
    tp, Ir, Hh = 2, WRITE["I"] // 2, WRITE["H"]
    w13 = [torch.empty(2 * Ir, Hh, dtype=torch.bfloat16) for _ in range(tp)]
    w2 = [torch.empty(Hh, Ir, dtype=torch.bfloat16) for _ in range(tp)]
    good = dict(gpu_tp_count=tp, expert_id=1, w13_weight_ptrs=_ptrs(w13), w13_scale_ptrs=[0, 0],
                w2_weight_ptrs=_ptrs(w2), w2_scale_ptrs=[0, 0])
    cases = [
        (dict(expert_id=8), ValueError, r"expert_id=8 is out of range: expected 0..7"),
        (dict(expert_id=-1), ValueError, r"expert_id=-1 is out of range"),
        (dict(expert_id=3), ValueError, r"expert_id=3 is a GPU expert"),
        (dict(expert_id=1.0), TypeError, r"expert_id=1.0 must be an integer"),
        (dict(gpu_tp_count=0), ValueError, r"gpu_tp_count=0 is out of range"),
        (dict(gpu_tp_count=5), ValueError, r"gpu_tp_count=5 does not divide moe_intermediate_size=96"),
        (dict(w13_weight_ptrs=_ptrs(w13)[:1]), ValueError, r"w13_weight_ptrs has 1 entries, expected gpu_tp_count=2"),
        (dict(w2_scale_ptrs=[0]), ValueError, r"w2_scale_ptrs has 1 entries, expected gpu_tp_count=2"),
        (dict(w2_weight_ptrs=[w2[0].data_ptr(), 0]), ValueError, r"w2_weight_ptrs\[1\] is 0, a null pointer"),
        (dict(w13_weight_ptrs=[w13[0], w13[1]]), TypeError, r"w13_weight_ptrs\[0\] must be an integer address"),
        (dict(w13_weight_ptrs=w13[0].data_ptr()), TypeError, r"w13_weight_ptrs must be a list"),
        (dict(w13_weight_ptrs=[-8, 8]), ValueError, r"w13_weight_ptrs\[0\]=-8 is not an address"),
        (dict(w13_scale_ptrs=[w2[0].data_ptr(), 0]), NotImplementedError,
         r"w13_scale_ptrs holds non-zero addresses.*pass 0 for every scale pointer"),
    ]
    return good, cases, (w13, w2)


def test_write_arguments_are_checked_by_name(moe):
    w, _ = _write_layer(moe, "BF16")
    good, cases, keep = _bad_write_calls()
    for change, error, words in cases:
        with pytest.raises(error, match=words):
            w.submit_write_weight_scale_to_buffer(**{**good, **change})
    assert w._writes == []  # nothing was queued by the refused calls
    w.submit_write_weight_scale_to_buffer(**good)  # the good call still works after them
    w.sync_write_weight_scale_to_buffer()
    assert not torch.isnan(keep[0][0].float()).any()


def test_native_write_checks_raise_rather_than_crash(moe):
    """The extension re-checks what it is handed (a caller bypassing the wrapper's checks)."""
    w, _ = _write_layer(moe, "AMXINT8")
    buf = torch.empty(2 * WRITE["I"] * WRITE["H"], dtype=torch.bfloat16)
    p = buf.data_ptr()
    for args, words in [((9, 1, [p], [p]), "expert_id=9 is out of range"),
                        ((0, 1, [p], [p]), "expert_id=0 is a GPU expert"),
                        ((1, 7, [p] * 7, [p] * 7), "gpu_tp_count=7 must be a positive divisor"),
                        ((1, 2, [p], [p, p]), "w13_weight_ptrs has 1 entries"),
                        ((1, 1, [p], [0]), r"w2_weight_ptrs\[0\] is a null pointer")]:
        with pytest.raises(ValueError, match=words):
            w._layer.submit_write_bf16(*args)


def test_write_before_load_is_refused():
    w = _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool))
    b = torch.empty(2 * I * H, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="before the weights were loaded"):
        w.submit_write_weight_scale_to_buffer(1, 0, [b.data_ptr()], [0], [b.data_ptr()], [0])


def test_cpu_infer_sync_drains_the_queued_forwards(moe):
    """wrapper.cpu_infer.sync() returns once the jobs already queued have run: here the forward
    of another wrapper on the same engine and this wrapper's own."""
    a, _ = _write_layer(moe, "BF16")
    b, _ = _write_layer(moe, "AMXINT4")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, WRITE["H"], generator=g).bfloat16()
    ids = torch.stack([torch.randperm(WRITE["E"], generator=g)[:WRITE["K"]] for _ in range(64)])
    weights = torch.rand(64, WRITE["K"], generator=g)
    a.submit_forward(x, ids, weights)
    b.submit_forward(x, ids, weights)
    jobs = [a._pending[0], b._pending[0]]
    a.cpu_infer.sync()
    assert all(j.done() for j in jobs)
    assert a.sync_forward(x).shape == b.sync_forward(x).shape == x.shape


def test_forward_inference_is_the_forward(moe):
    """sglang-kt's submit_forward_inference(x, ids, weights, stream) / sync_forward_inference(stream):
    the same output, bit for bit, as submit_forward / sync_forward."""
    w, _ = _write_layer(moe, "AMXINT8")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, WRITE["H"], generator=g).bfloat16()
    ids = torch.stack([torch.randperm(WRITE["E"], generator=g)[:WRITE["K"]] for _ in range(20)])
    weights = torch.rand(20, WRITE["K"], generator=g)
    want = w.forward(x, ids, weights, 0).clone()
    w.submit_forward_inference(x, ids, weights, 0)
    ids.fill_(-1)  # sglang-kt may reuse the ids after the submit
    got = w.sync_forward_inference(0)
    assert got.shape == x.shape and got.dtype == torch.bfloat16
    assert torch.equal(got, want)
    with pytest.raises(RuntimeError, match="sync_forward called without submit_forward"):
        w.sync_forward_inference(0)


@pytest.mark.parametrize("tp", [1, 2])
def test_write_handles_padded_panels(moe, method, tp):
    """H = 40 and I = 48: packed K padded (to 32 for int4), partial panels of 16 rows, and I split
    over one sub-pool per 16 or 32 channels; every CPU slot still comes back as loaded."""
    from kt_kernel import KTMoEWrapper

    E_, H_, I_ = 4, 40, 48
    shape = moe.Shape(E_, 2, H_, I_)
    w = KTMoEWrapper(0, E_, 2, H_, I_, gpu_experts_mask=torch.tensor([False, True, False, False]),
                     cpuinfer_threads=2, threadpool_count=2, method=method)
    w.load_weights_from_tensors(*moe.weights(shape))
    gate, up, down = moe.dequantized(moe.format_of(method)["name"], shape)
    Ir = I_ // tp
    for e in (0, 2, 3):
        w13 = [torch.full((2 * Ir, H_), float("nan"), dtype=torch.bfloat16) for _ in range(tp)]
        w2 = [torch.full((H_, Ir), float("nan"), dtype=torch.bfloat16) for _ in range(tp)]
        w.submit_write_weight_scale_to_buffer(tp, e, _ptrs(w13), [0] * tp, _ptrs(w2), [0] * tp)
        w.sync_write_weight_scale_to_buffer()
        for r in range(tp):
            want13 = torch.cat([gate[e, r * Ir:(r + 1) * Ir], up[e, r * Ir:(r + 1) * Ir]]).bfloat16()
            assert torch.equal(w13[r].view(torch.int16), want13.view(torch.int16)), f"slot {e} w13 rank {r}"
            assert torch.equal(w2[r].view(torch.int16), down[e, :, r * Ir:(r + 1) * Ir].bfloat16().view(torch.int16))
