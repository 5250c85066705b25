"""Method MXFP4 and gpt-oss's experts: tiny gpt-oss MXFP4 releases (fused experts, gate and up
interleaved, e2m1 nibbles with ue8m0 scales, biases) loaded through KTMoEWrapper.load_weights and
checked on every tier against the float64 reference on transformers' own MXFP4 dequantization
(independent of kt_kernel's reader), whose gpt-oss semantics (biases, clamped SwiGLU with alpha,
the down bias inside the routing weight) are checked against transformers' GptOssExperts. The
same activation on every method through load_weights_from_tensors; bad input raises by name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import kt_kernel
import gguf_reference as gr
import reference
from format_expectations import kernel_row
from kt_kernel import KTMoEWrapper, set_isa
from kt_kernel.checkpoint import ConversionError, open_checkpoint
from kt_kernel.checkpoint.mxfp4 import gpt_oss_blocks
from kt_kernel.formats import formats as method_formats

HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
TEST_TIERS = HOST_TIERS + list(kt_kernel.cpu_info()["emulated_tiers"])
H, I, E, TOPK = 128, 96, 6, 2
LAYER = 1
LIMIT, ALPHA = 1.0, 1.702  # gpt-oss clamps at 7.0; 1.0 makes the tiny layers reach the clamp
PREFIX = f"model.layers.{LAYER}.mlp.experts"


def _dequant_transformers(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """transformers' MXFP4 dequantization of gpt-oss blocks [E, N, G, 16] and scales [E, N, G], as
    [E, N, K] fp32 (it returns the transposed [E, K, N] that GptOssExperts holds)."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    return convert_moe_packed_tensors(blocks, scales, dtype=torch.float32).transpose(1, 2).contiguous()


def build_release(path: Path, *, seed=0, limit=LIMIT, bias_dtype=torch.bfloat16):
    """A gpt-oss MXFP4 checkpoint with random blocks, and (gate, up, down) fp32 [E, N, K] and the
    biases (gate, up [E, I], down [E, H]) as transformers decodes them."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "gpt_oss", "hidden_size": H, "intermediate_size": I, "num_local_experts": E,
           "num_experts_per_tok": TOPK, "num_hidden_layers": 2, "vocab_size": 32, "swiglu_limit": limit,
           "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}}
    (path / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(seed)

    def blocks(N, K, scale_exp):
        b = torch.randint(0, 256, (E, N, K // 32, 16), generator=g, dtype=torch.uint8)
        s = torch.randint(scale_exp - 2, scale_exp + 1, (E, N, K // 32), generator=g).to(torch.uint8)
        return b, s
    # weights of about 1 / sqrt(K): e2m1 values up to 6 times 2^(s - 127)
    gu_b, gu_s = blocks(2 * I, H, 127 - 6)
    dn_b, dn_s = blocks(H, I, 127 - 6)
    gu_s[1, 5, 0] = 0  # a subnormal scale
    gu_bias = (torch.randn(E, 2 * I, generator=g) * 0.5).to(bias_dtype)
    dn_bias = (torch.randn(E, H, generator=g) * 0.1).to(bias_dtype)
    tensors = {"model.embed_tokens.weight": torch.zeros(32, H, dtype=torch.bfloat16),
               f"{PREFIX}.gate_up_proj_blocks": gu_b, f"{PREFIX}.gate_up_proj_scales": gu_s,
               f"{PREFIX}.gate_up_proj_bias": gu_bias, f"{PREFIX}.down_proj_blocks": dn_b,
               f"{PREFIX}.down_proj_scales": dn_s, f"{PREFIX}.down_proj_bias": dn_bias}
    save_file(tensors, str(path / "model.safetensors"))
    gu = _dequant_transformers(gu_b, gu_s)
    weights = (gu[:, 0::2], gu[:, 1::2], _dequant_transformers(dn_b, dn_s))
    biases = (gu_bias.float()[:, 0::2], gu_bias.float()[:, 1::2], dn_bias.float())
    return path, weights, biases


def _glu(biases, limit=LIMIT, alpha=ALPHA):
    return {"gate_bias": biases[0], "up_bias": biases[1], "down_bias": biases[2], "limit": limit, "alpha": alpha}


def _wrapper(path, **kw):
    kw.setdefault("cpuinfer_threads", 2)
    return KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                        moe_intermediate_size=I, weight_path=str(path), method="MXFP4", **kw)


def _inputs(M, seed=1, n_experts=E):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(n_experts, generator=g)[:TOPK] for _ in range(M)])
    return x, ids, torch.softmax(torch.randn(M, TOPK, generator=g), -1)


def test_reader_blocks_decode_as_transformers():
    """The reader's blocks (nibbles reordered into ggml's block_mxfp4) decode, by gguf's own
    dequantizer, to exactly transformers' dequantization of the gpt-oss bytes."""
    g = torch.Generator().manual_seed(4)
    b = torch.randint(0, 256, (1, 24, 5, 16), generator=g, dtype=torch.uint8)
    s = torch.randint(0, 255, (1, 24, 5), generator=g).to(torch.uint8)
    ours = gr.dequantize("mxfp4", gpt_oss_blocks(b[0].numpy(), s[0].numpy()), 160)
    theirs = _dequant_transformers(b, s)[0].numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_reference_semantics_are_transformers_gpt_oss_experts():
    """The float64 reference's glu (biases, clamp, alpha, down bias inside the routing weight) is
    transformers' GptOssExperts on the same weights."""
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts
    torch.manual_seed(0)
    cfg = GptOssConfig(hidden_size=H, intermediate_size=I, num_local_experts=E, num_experts_per_tok=TOPK,
                       swiglu_limit=LIMIT)
    experts = GptOssExperts(cfg).float()
    gate, up = torch.randn(E, I, H) * 0.3, torch.randn(E, I, H) * 0.3  # |g| past the limit for some rows
    down = torch.randn(E, H, I) / I**0.5
    gb, ub, db = torch.randn(E, I), torch.randn(E, I), torch.randn(E, H)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.stack([gate, up], 2).reshape(E, 2 * I, H).transpose(1, 2))
        experts.gate_up_proj_bias.copy_(torch.stack([gb, ub], 2).reshape(E, 2 * I))
        experts.down_proj.copy_(down.transpose(1, 2))
        experts.down_proj_bias.copy_(db)
        x, ids, w = _inputs(7)
        theirs = experts(x.float(), ids, w).double()
    ours = reference.moe_forward(x.float(), ids, w, gate, up, down, glu=_glu((gb, ub, db), alpha=experts.alpha))
    assert experts.alpha == ALPHA and experts.limit == LIMIT
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("threadpool_count", [1, 2])
def test_release_runs_as_stored(moe, tmp_path, tier, threadpool_count):
    """Decode (1 token) and prefill (300 tokens, in chunks of 128): within the mxfp4 bound of the
    float64 reference on transformers' decoding, with the tier's q8_32 activations emulated."""
    path, (gate, up, down), biases = build_release(tmp_path / "ckpt")
    set_isa(tier)
    try:
        w = _wrapper(path, threadpool_count=threadpool_count, chunked_prefill_size=128)
        assert (w.swiglu_limit, w.swiglu_alpha) == (LIMIT, ALPHA)  # taken from the checkpoint
        w.load_weights()
        act = kernel_row("mxfp4", w.isa_tier)["act"]
        bounds = reference.slice_bounds(I, threadpool_count, 32, 32)
        for M in (1, 300):
            x, ids, wts = _inputs(M)
            out = w.forward(x, ids, wts)
            ref = reference.moe_forward(x.float(), ids, wts, gate, up, down, act=act, slice_bounds=bounds,
                                        glu=_glu(biases))
            moe.assert_close_dequant(out, ref, "mxfp4", what=f"MXFP4 release on {tier}, M={M}")
    finally:
        set_isa(None)


def test_map_and_gpu_experts_read_only_cpu_experts(moe, tmp_path):
    path, (gate, up, down), biases = build_release(tmp_path / "ckpt")
    pmap = torch.tensor([5, 4, 3, 2, 1, 0])
    mask = torch.tensor([False, True, False, False, True, False])
    w = _wrapper(path, gpu_experts_mask=mask)
    w.load_weights(pmap)
    x, ids, wts = _inputs(9)
    act = kernel_row("mxfp4", w.isa_tier)["act"]
    ref = reference.moe_forward(x.float(), ids, wts, gate, up, down, physical_to_logical_map=pmap.tolist(),
                                gpu_mask=mask.tolist(), act=act, slice_bounds=[0, I], glu=_glu(biases))
    moe.assert_close_dequant(w.forward(x, ids, wts), ref, "mxfp4", what="MXFP4 with a map and GPU slots")


def test_swiglu_values_follow_the_checkpoint(tmp_path):
    path, *_ = build_release(tmp_path / "ckpt", limit=5.0)
    assert (_wrapper(path).swiglu_limit, _wrapper(path).swiglu_alpha) == (5.0, ALPHA)
    assert _wrapper(path, swiglu_limit=5.0, swiglu_alpha=ALPHA).swiglu_limit == 5.0
    with pytest.raises(ValueError, match=r"swiglu_limit=0.0, but the experts of .* swiglu_limit=5.0"):
        _wrapper(path, swiglu_limit=0.0, swiglu_alpha=0.0)


def test_nan_exponent_is_refused_naming_the_expert(tmp_path):
    path, *_ = build_release(tmp_path / "ckpt")
    t = load_file(str(path / "model.safetensors"))
    t[f"{PREFIX}.down_proj_scales"][4, 7, 1] = 255
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"down weights \(mxfp4\) of logical expert 4: block \[7, 1\].*0xff"):
        _wrapper(path).load_weights()


def test_release_under_another_method_is_refused(tmp_path):
    path, *_ = build_release(tmp_path / "ckpt")
    assert open_checkpoint(path, "MXFP4").kind == "mxfp4"
    with pytest.raises(ConversionError, match="MXFP4 experts .*method MXFP4"):
        KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                     moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method="AMXINT4").load_weights()


def test_mismatched_tensor_is_refused_naming_it(tmp_path):
    path, *_ = build_release(tmp_path / "ckpt")
    t = load_file(str(path / "model.safetensors"))
    t[f"{PREFIX}.down_proj_bias"] = t[f"{PREFIX}.down_proj_bias"][:, :-1].contiguous()
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ConversionError, match=rf"{PREFIX}.down_proj_bias is BF16 \(6, 127\).*\(6, 128\)"):
        _wrapper(path).load_weights()


def test_rows_must_be_whole_blocks():
    with pytest.raises(ValueError, match="mxfp4 gate/up rows are whole blocks of 32 weights: hidden_size=72"):
        KTMoEWrapper(layer_idx=0, num_experts=4, num_experts_per_tok=2, hidden_size=72, moe_intermediate_size=64,
                     cpuinfer_threads=2, method="MXFP4").load_weights_from_tensors(
            torch.randn(4, 64, 72), torch.randn(4, 64, 72), torch.randn(4, 72, 64))


# ---- the gpt-oss activation and biases on every method ------------------------------------------

METHODS = [f["method"] for f in method_formats()]


@pytest.mark.parametrize("tier", TEST_TIERS)
@pytest.mark.parametrize("method", METHODS)
def test_biases_and_clamped_swiglu_on_every_method(moe, tier, method):
    """load_weights_from_tensors with biases and gpt-oss's activation: within each format's bound
    of the float64 reference on the dequantized weights, decode and prefill, 2 sub-pools."""
    from kt_kernel import _ext
    fmt = next(f["name"] for f in method_formats() if f["method"] == method)
    g = torch.Generator().manual_seed(2)
    gate, up = torch.randn(E, I, H, generator=g) * 0.3, torch.randn(E, I, H, generator=g) * 0.3
    down = torch.randn(E, H, I, generator=g) / I**0.5
    biases = (torch.randn(E, I, generator=g), torch.randn(E, I, generator=g), torch.randn(E, H, generator=g))
    set_isa(tier)
    try:
        w = KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                         cpuinfer_threads=2, threadpool_count=2, method=method, swiglu_limit=1.5, swiglu_alpha=ALPHA)
        w.load_weights_from_tensors(gate, up, down, gate_bias=biases[0], up_bias=biases[1].bfloat16(),
                                    down_bias=biases[2])
        deq = [torch.stack([torch.from_numpy(_ext.dequantize(_ext.quantize(fmt, t[e].numpy()))) for e in range(E)])
               for t in (gate, up, down)]
        rec = next(f for f in method_formats() if f["method"] == method)
        bounds = reference.slice_bounds(I, 2, rec["group"], rec["k_align"])
        act = kernel_row(fmt, w.isa_tier if tier != "amx_emu" else "amx_emu")["act"]
        for M in (1, 40):
            x, ids, wts = _inputs(M, seed=M)
            ref = reference.moe_forward(x.float(), ids, wts, *deq, act=act, slice_bounds=bounds,
                                        glu=_glu((biases[0], biases[1].bfloat16().float(), biases[2]), limit=1.5))
            moe.assert_close_dequant(w.forward(x, ids, wts), ref, fmt, what=f"{method} gpt-oss activation on {tier}, M={M}")
    finally:
        set_isa(None)


def test_no_clamp_and_no_bias_is_plain_swiglu_bit_for_bit():
    """swiglu_limit = swiglu_alpha = 0 and no biases: the kernels' plain path, unchanged."""
    g = torch.Generator().manual_seed(3)
    gate, up, down = torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g), torch.randn(E, H, I, generator=g)
    outs = []
    for kw in ({}, {"swiglu_limit": 0.0, "swiglu_alpha": 0.0}):
        w = KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                         cpuinfer_threads=2, method="AMXINT8", **kw)
        w.load_weights_from_tensors(gate, up, down)
        outs.append(w.forward(*_inputs(5)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name,value,err,match", [
    ("gate_bias", torch.zeros(E, I + 1), ValueError, r"gate_bias has shape \(6, 97\): dimension 1 is 97, expected 96"),
    ("down_bias", torch.zeros(E, H, dtype=torch.int32), TypeError, "down_bias has dtype int32"),
    ("up_bias", torch.zeros(E, I)[:, ::1].t().contiguous().t(), ValueError, "up_bias is not contiguous"),
    ("down_bias", torch.full((E, H), float("nan")), ValueError, r"down_bias of logical expert 0 is NaN or Inf at \[0\]"),
])
def test_bad_biases_are_refused_by_name(name, value, err, match):
    w = KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, method="BF16")
    with pytest.raises(err, match=match):
        w.load_weights_from_tensors(torch.zeros(E, I, H), torch.zeros(E, I, H), torch.zeros(E, H, I), **{name: value})
