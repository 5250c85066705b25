"""A MoE layer on GGUF blocks as a file stores them, projection by projection (gate/up in one type,
down in another, as real files mix them), against the float64 reference MoE on gguf's dequantized
weights with the kernels' activation rounding emulated, on every ISA tier whose kernels differ."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.accuracy import relative_error
from kt_kernel.formats import GGUF_METHOD, all_formats
from kt_kernel.random_moe import random_expert_weights, random_inputs
from kt_kernel.torch_moe import moe_forward as torch_moe_forward

import gguf_reference as gr
import reference
from format_expectations import ACT_ATOL

# LLAMAFILE's formats and mxfp4 (a GGUF type too: gpt-oss GGUFs store their experts in it)
RECORDS = {f["name"]: f for f in all_formats() if f["method"] == GGUF_METHOD or f["name"] == "mxfp4"}
HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
E, TOPK, H, I = 6, 3, 512, 512


def _pairs():
    """(gate/up format, down format): each format with itself, and the mixes real files hold."""
    pairs = [(f, f) for f in RECORDS]
    for mix in [("q4_K", "q6_K"), ("q5_K", "q6_K"), ("q4_0", "q8_0"), ("iq4_xs", "q6_K"), ("q8_0", "f16")]:
        if all(m in RECORDS for m in mix):
            pairs.append(mix)
    return pairs


def _rows(fmt: str, tier: str) -> str:
    rank = HOST_TIERS.index(tier)
    return next(r["name"] for r in _ext.kernel_table()
                if r["format"] == fmt and r["min_m"] == 0 and HOST_TIERS.index(r["tier"]) <= rank)


def _cases():
    """Each pair on the host tiers whose kernels for it differ from the lower tier's."""
    cases = []
    for gu, dn in _pairs():
        seen = set()
        for tier in HOST_TIERS:
            rows = (_rows(gu, tier), _rows(dn, tier))
            if rows not in seen:
                seen.add(rows)
                cases.append(pytest.param(gu, dn, tier, id=f"{gu}-{dn}-{tier}"))
    return cases


def _experts(fmt: str, N: int, K: int, rng) -> tuple[np.ndarray, torch.Tensor]:
    """Blocks [E, N, row_bytes] of random valid rows, and their gguf dequantization [E, N, K]."""
    blocks = np.stack([gr.random_blocks(fmt, N, K, rng, scale=2.0**-6 if fmt not in ("f16", "f32") else 2.0**-8)
                       for _ in range(E)])
    deq = torch.from_numpy(np.stack([gr.dequantize(fmt, b, K) for b in blocks]))
    return blocks, deq


@pytest.mark.parametrize("gu,dn,tier", _cases())
@pytest.mark.parametrize("M", [1, 40])
@pytest.mark.parametrize("pools", [1, 2])
def test_layer_matches_reference(gu, dn, tier, M, pools):
    kt_kernel.set_isa(tier)
    rng = np.random.default_rng(7)
    (gb, G), (ub, U), (db, D) = _experts(gu, I, H, rng), _experts(gu, I, H, rng), _experts(dn, H, I, rng)
    layer = _ext.MoeLayer(_ext.Engine.shared(2, pools), E, TOPK, H, I, GGUF_METHOD, [1] * E, 512, formats=[gu, dn])
    pmap = torch.tensor([3, 0, 5, 1, 4, 2], dtype=torch.int64)
    layer.load_quantized([[gb.ctypes.data], [ub.ctypes.data], [db.ctypes.data]], pmap.data_ptr(), E)
    x = torch.randn(M, H, dtype=torch.bfloat16)
    ids = torch.stack([torch.randperm(E)[:TOPK] for _ in range(M)]).to(torch.int32)
    w = torch.rand(M, TOPK)
    job, out = layer.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), False, w.data_ptr(), "float32", M)
    job.wait()
    out = torch.from_numpy(out.view(np.int16).copy()).view(torch.bfloat16).double()
    bounds = reference.slice_bounds(I, pools, RECORDS[dn]["group"], RECORDS[dn]["k_align"])
    ref = reference.moe_forward(x.float(), ids, w, G, U, D, physical_to_logical_map=pmap.tolist(),
                                act=RECORDS[gu]["acts"][0], h_act=RECORDS[dn]["acts"][0], slice_bounds=bounds)
    atol = max(ACT_ATOL[RECORDS[gu]["acts"][0]], ACT_ATOL[RECORDS[dn]["acts"][0]]) * ref.abs().max()
    err = (out - ref).abs()
    bound = 2.0**-8 * ref.abs() + atol
    assert (err <= bound).all(), f"worst error {err.max():.3g} (max|ref| {ref.abs().max():.3g})"
    assert layer.format == gu and layer.down_format == dn


def test_layer_refuses_partial_blocks():
    with pytest.raises(ValueError, match="q8_0 gate/up rows are whole blocks of 32 weights: hidden_size=48"):
        _ext.MoeLayer(_ext.Engine.shared(2, 1), 4, 2, 48, 64, GGUF_METHOD, [1] * 4, 64, formats=["q8_0", "q8_0"])
    with pytest.raises(ValueError, match="q8_0 down rows are whole blocks of 32 weights: moe_intermediate_size=48"):
        _ext.MoeLayer(_ext.Engine.shared(2, 1), 4, 2, 64, 48, GGUF_METHOD, [1] * 4, 64, formats=["f16", "q8_0"])
    with pytest.raises(ValueError, match="LLAMAFILE takes the formats of a GGUF file"):
        _ext.MoeLayer(_ext.Engine.shared(2, 1), 4, 2, 64, 64, GGUF_METHOD, [1] * 4, 64)
    with pytest.raises(ValueError, match="format int4_g32 belongs to method AMXINT4, not LLAMAFILE"):
        _ext.MoeLayer(_ext.Engine.shared(2, 1), 4, 2, 64, 64, GGUF_METHOD, [1] * 4, 64, formats=["int4_g32", "q8_0"])


@pytest.mark.parametrize("fmt", list(RECORDS), ids=list(RECORDS))
@pytest.mark.parametrize("M", [1, 64])
def test_layer_error_against_fp32_weights_within_bound(fmt, M):
    """The whole path from fp32 weights (our quantizer, the kernels, q8 activations, bf16 output)
    against the fp32 layer on the original weights: within the record's layer_rel_err, on the
    random layers of kt_kernel.random_moe the bound was measured on."""
    Es, Hs, Is, Ks = 8, 512, 512, 2
    gate, up, down = random_expert_weights(Es, Hs, Is, seed=11, dtype=torch.float32)
    layer = _ext.MoeLayer(_ext.Engine.shared(2, 1), Es, Ks, Hs, Is, GGUF_METHOD, [1] * Es, 512, formats=[fmt, fmt])
    pmap = torch.arange(Es, dtype=torch.int64)
    layer.load_from_tensors(gate.data_ptr(), up.data_ptr(), down.data_ptr(), "float32", pmap.data_ptr(), Es)
    x, ids, w = random_inputs(M, Hs, Es, Ks, seed=12)
    job, out = layer.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), True, w.data_ptr(), "float32", M)
    job.wait()
    out = torch.from_numpy(out.view(np.int16).copy()).view(torch.bfloat16)
    err = relative_error(out, torch_moe_forward(x.float(), ids, w, gate, up, down, out_dtype=torch.float32))
    assert err <= RECORDS[fmt]["layer_rel_err"], f"{fmt} M={M}: {err:.4f} > {RECORDS[fmt]['layer_rel_err']}"


def test_llamafile_takes_bf16_tensors():
    """A GGUF file may store experts in BF16: the bf16 format (method BF16) is one of LLAMAFILE's."""
    layer = _ext.MoeLayer(_ext.Engine.shared(2, 1), 4, 2, 64, 64, GGUF_METHOD, [1] * 4, 64, formats=["bf16", "q8_0"])
    assert (layer.format, layer.down_format) == ("bf16", "q8_0")


def _layouts():
    """Each format with a kernel row that reads a packed layout of its own, on a host tier."""
    return [pytest.param(r["format"], r["tier"], r["name"], id=f"{r['format']}-{r['layout']}")
            for r in _ext.kernel_table() if r["layout"] and r["tier"] in HOST_TIERS and r["format"] in RECORDS]


@pytest.mark.parametrize("fmt,tier,row", _layouts())
def test_layout_packs_and_unpacks_the_files_blocks(fmt, tier, row):
    """A format whose kernels read their own layout (the K-quants' word-interleaved panels): the
    weights written back as bf16 (submit_write_bf16, the GPU-side prefill path, which unpacks that
    layout) are gguf's dequantization of the file's blocks, rounded to bf16, and a layer packed in
    the layout agrees with one packed for the generic kernels (their rounding differs by the order
    of fp32 sums only)."""
    Hs, Is, Es = 512, 768, 2  # down rows of 3 k-blocks: odd counts of k-blocks per panel
    rng = np.random.default_rng(3)
    (gb, G), (ub, U), (db, D) = (_experts(fmt, n, k, rng) for n, k in ((Is, Hs), (Is, Hs), (Hs, Is)))
    pmap = torch.arange(Es, dtype=torch.int64)

    def layer(isa):
        kt_kernel.set_isa(isa)
        l = _ext.MoeLayer(_ext.Engine.shared(2, 2), Es, 2, Hs, Is, GGUF_METHOD, [1] * Es, 64, formats=[fmt, fmt])
        l.load_quantized([[gb[:Es].ctypes.data], [ub[:Es].ctypes.data], [db[:Es].ctypes.data]], pmap.data_ptr(), Es)
        return l

    packed = layer(tier)
    assert packed.kernel_name == row
    for slot in range(Es):
        w13, w2 = torch.empty(2 * Is, Hs, dtype=torch.bfloat16), torch.empty(Hs, Is, dtype=torch.bfloat16)
        packed.submit_write_bf16(slot, 1, [w13.data_ptr()], [w2.data_ptr()]).wait()
        assert torch.equal(w13, torch.cat([G[slot], U[slot]]).bfloat16()), f"slot {slot} gate/up"
        assert torch.equal(w2, D[slot].bfloat16()), f"slot {slot} down"
    x = torch.randn(5, Hs, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.int32)
    w = torch.rand(5, 2)
    outs = []
    for l in (packed, layer("generic")):
        job, out = l.submit(x.data_ptr(), "bfloat16", ids.data_ptr(), False, w.data_ptr(), "float32", 5)
        job.wait()
        outs.append(torch.from_numpy(out.view(np.int16).copy()).view(torch.bfloat16).float())
    assert (outs[0] - outs[1]).abs().max() <= 2.0**-7 * outs[1].abs().max()
