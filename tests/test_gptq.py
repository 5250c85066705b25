"""GPTQ on the CPU (kt_kernel.gpu_convert.gptq): on a layer whose calibration inputs are correlated
(as hidden states are), GPTQ's output error is below round-to-nearest's at the same settings, for
int4 groups (symmetric and asymmetric, with and without act-order) and int8 per channel; its
integers and scales are compressed-tensors' own format (its compressor reproduces the integers, its
decompressor our weights)."""
from __future__ import annotations

import pytest
import torch

from kt_kernel.gpu_convert import gptq_quantize, hessian, layer_error, rtn_quantize

N, K, T = 48, 256, 1024
CASES = [(4, 128, True, False), (4, 32, False, False), (4, 64, True, True), (8, 0, True, False)]
IDS = [f"int{b}-g{g or 'ch'}-{'sym' if s else 'asym'}{'-actorder' if a else ''}" for b, g, s, a in CASES]


def _layer(seed=0):
    """W [N, K] and calibration inputs X [T, K] with a decaying spectrum of correlations."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) / K**0.5
    mix = torch.randn(K, K, generator=g) * torch.logspace(0, -2, K)[:, None]
    x = torch.randn(T, K, generator=g) @ mix + 0.05 * torch.randn(T, K, generator=g)
    return w, x


@pytest.mark.parametrize("bits,group,sym,act_order", CASES, ids=IDS)
def test_gptq_beats_round_to_nearest(bits, group, sym, act_order):
    w, x = _layer()
    h = hessian(x)
    ours = gptq_quantize(w, h, bits, group, sym, act_order=act_order)
    rtn = rtn_quantize(w, bits, group, sym)
    e_gptq, e_rtn = layer_error(w, ours.dequantize(), h), layer_error(w, rtn.dequantize(), h)
    direct = float(((x.double() @ (w.double() - ours.dequantize().double()).T) ** 2).sum(1).mean())
    assert e_gptq == pytest.approx(direct, rel=1e-6)  # layer_error is the mean output error on X
    assert e_gptq < 0.7 * e_rtn, (e_gptq, e_rtn)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert int(ours.q.min()) >= lo and int(ours.q.max()) <= hi
    assert ours.scale.shape == (N, K // (group or K))  # act-order keeps contiguous groups: no g_idx


def test_dead_inputs_give_zero_columns():
    w, x = _layer(1)
    x[:, 7] = 0.0
    ours = gptq_quantize(w, hessian(x), 4, 32, True)
    assert torch.all(ours.dequantize()[:, 7] == 0)


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
def test_compressed_tensors_reproduces_the_integers_and_weights(sym, scale_dtype):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    w, x = _layer(2)
    ours = gptq_quantize(w, hessian(x), 4, 64, sym, act_order=True, scale_dtype=scale_dtype)
    assert ours.scale.dtype == scale_dtype
    args = QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy="group", group_size=64)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    deq = ours.dequantize()
    c = PackedQuantizationCompressor.compress({"weight": deq, "weight_scale": ours.scale,
                                               "weight_zero_point": ours.zero_point}, scheme)
    words = c["weight_packed"].view(torch.int32)  # [N, K / 8]: value i of a word at bits 4i, plus 8
    nibbles = (words[:, :, None] >> (4 * torch.arange(8, dtype=torch.int32))) & 0xF
    assert torch.equal(nibbles.reshape(N, K).to(torch.int8) - 8, ours.q)
    back = PackedQuantizationCompressor.decompress(c, scheme)["weight"]
    # the decompressor computes in the scale's dtype: our exact weight rounded once to it
    assert back.dtype == scale_dtype and torch.equal(back, deq.to(scale_dtype))


def test_bad_settings_are_refused():
    w, x = _layer()
    with pytest.raises(ValueError, match="group_size=100 does not divide the input dimension 256"):
        gptq_quantize(w, hessian(x), 4, 100)
    with pytest.raises(ValueError, match=r"the Hessian is \(8, 8\), expected \(256, 256\)"):
        gptq_quantize(w, torch.eye(8), 4, 128)
    with pytest.raises(ValueError, match="damp=1.5"):
        gptq_quantize(w, hessian(x), 4, 128, damp=1.5)


def test_inverse_upper_factor():
    from kt_kernel.gpu_convert.gptq import inverse_upper_factor

    w, x = _layer(3)
    h = hessian(x).double()
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(K, dtype=torch.float64)
    u = inverse_upper_factor(h).double()
    assert torch.equal(u, torch.triu(u))
    torch.testing.assert_close(u.T @ u, torch.linalg.inv(h), rtol=0, atol=2e-4 * float(torch.linalg.inv(h).abs().max()))


def test_row_errors_are_layer_error_by_row():
    from kt_kernel.gpu_convert.convert import _row_errors

    w, x = _layer(4)
    h = hessian(x)
    a, b = rtn_quantize(w, 4, 32).dequantize(), gptq_quantize(w, h, 4, 32).dequantize()
    via_h = _row_errors(w, [a, b], h, None)
    via_x = _row_errors(w, [a, b], h, x[:200])  # T < K: through X (its own H)
    h200 = hessian(x[:200])
    for per, ref_h in ((via_h, h), (via_x, h200)):
        for rows, approx in zip(per, (a, b)):
            assert float(rows.sum()) == pytest.approx(layer_error(w, approx, ref_h), rel=1e-4)
