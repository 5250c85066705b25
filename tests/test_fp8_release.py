"""Method FP8 on FP8 releases as they are stored: tiny DeepSeek-V3-style checkpoints (e4m3 experts
with block scales, per-expert and fused layouts, fp32 / bf16 / ue8m0 scales, blocks [128, 128]
and [64, 128]), loaded through KTMoEWrapper.load_weights and checked on every tier against the
float64 reference on torch's own float8_e4m3fn decoding times the block scales (independent of
kt_kernel's reader). Bad files raise naming the tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import kt_kernel
import reference
from format_expectations import kernel_row
from kt_kernel import KTMoEWrapper, _ext, set_isa
from kt_kernel.checkpoint import ConversionError

HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])

H, I, E, TOPK = 256, 192, 6, 2  # I = 1.5 blocks of 128: a partial block along N (gate/up) and K (down)
LAYER = 1


def _e4m3_and_scales(w: torch.Tensor, block, scale_dtype: str):
    """DeepSeek's block quantization of w [N, K]: scale_inv = amax / 448 per block, q = w / scale."""
    bn, bk = block
    N, K = w.shape
    sn, sk = -(-N // bn), -(-K // bk)
    pad = torch.zeros(sn * bn, sk * bk)
    pad[:N, :K] = w
    s = pad.reshape(sn, bn, sk, bk).abs().amax(dim=(1, 3)) / 448.0
    if scale_dtype == "ue8m0":
        s = torch.exp2(torch.ceil(torch.log2(s)))
    elif scale_dtype == "bf16":
        s = s.bfloat16().float()
    q = (w / s.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]).to(torch.float8_e4m3fn)
    stored = {"fp32": s, "bf16": s.bfloat16(), "ue8m0": s.to(torch.float8_e8m0fnu)}[scale_dtype]
    return q, stored


def _decode(q: torch.Tensor, s: torch.Tensor, block) -> torch.Tensor:
    bn, bk = block
    N, K = q.shape
    return q.float() * s.float().repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]


def build_fp8(path: Path, *, layout="per-expert", block=(128, 128), scale_dtype="fp32", seed=0):
    """The checkpoint, and its experts decoded by torch: (gate, up, down) fp32 [E, N, K]."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "deepseek_v3", "hidden_size": H, "moe_intermediate_size": I, "intermediate_size": 2 * I,
           "n_routed_experts": E, "num_experts_per_tok": TOPK, "num_hidden_layers": 2, "first_k_dense_replace": 1,
           "vocab_size": 32, "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                                     "weight_block_size": list(block)}}
    (path / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(seed)
    gate, up = (torch.randn(E, I, H, generator=g) * H ** -0.5 for _ in range(2))
    down = torch.randn(E, H, I, generator=g) * I ** -0.5
    gate[1, 3, :40] = 0.0  # a partly zero block row, and tiny values: e4m3 subnormals
    down[2, :, 5] *= 1e-4
    prefix = f"model.layers.{LAYER}.mlp.experts"
    tensors, decoded = {"model.embed_tokens.weight": torch.zeros(32, H, dtype=torch.bfloat16)}, [[], [], []]
    if layout == "fused":
        for name, w, parts in (("gate_up_proj", torch.cat([gate, up], 1), (0, 1)), ("down_proj", down, (2,))):
            qs = [_e4m3_and_scales(w[e], block, scale_dtype) for e in range(E)]
            tensors[f"{prefix}.{name}"] = torch.stack([q for q, _ in qs])
            tensors[f"{prefix}.{name}_scale_inv"] = torch.stack([s for _, s in qs])
            for q, s in qs:
                d = _decode(q, s, block)
                for j, rows in zip(parts, (slice(0, I), slice(I, 2 * I)) if len(parts) == 2 else (slice(None),)):
                    decoded[j].append(d[rows])
    else:
        for e in range(E):
            for j, (name, w) in enumerate((("gate_proj", gate[e]), ("up_proj", up[e]), ("down_proj", down[e]))):
                q, s = _e4m3_and_scales(w, block, scale_dtype)
                tensors[f"{prefix}.{e}.{name}.weight"] = q
                tensors[f"{prefix}.{e}.{name}.weight_scale_inv"] = s
                decoded[j].append(_decode(q, s, block))
    save_file(tensors, str(path / "model.safetensors"))
    return path, tuple(torch.stack(d) for d in decoded)


def _wrapper(path, **kw):
    return KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                        moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method="FP8", **kw)


def _inputs(M, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:TOPK] for _ in range(M)])
    return x, ids, torch.rand(M, TOPK, generator=g)


CASES = [("per-expert", (128, 128), "fp32"), ("fused", (128, 128), "fp32"), ("per-expert", (128, 128), "ue8m0"),
         ("per-expert", (64, 128), "bf16"), ("fused", (64, 128), "ue8m0")]


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("layout,block,scale_dtype", CASES, ids=["-".join(map(str, c)) for c in CASES])
@pytest.mark.parametrize("threadpool_count", [1, 2])
def test_release_runs_as_stored(moe, tmp_path, tier, layout, block, scale_dtype, threadpool_count):
    """Decode (1 token) and prefill (300 tokens, in chunks of 128): within the fp8_g128 bound of
    the float64 reference on torch's decoding of the stored bytes, with the tier's activations."""
    path, (gate, up, down) = build_fp8(tmp_path / "ckpt", layout=layout, block=block, scale_dtype=scale_dtype)
    set_isa(tier)
    try:
        w = _wrapper(path, threadpool_count=threadpool_count, chunked_prefill_size=128)
        w.load_weights()
        act = kernel_row("fp8_g128", w.isa_tier)["act"]
        bounds = reference.slice_bounds(I, threadpool_count, 128, 128)
        for M in (1, 300):
            x, ids, wts = _inputs(M)
            out = w.forward(x, ids, wts)
            ref = reference.moe_forward(x.float(), ids, wts, gate, up, down, act=act, slice_bounds=bounds)
            moe.assert_close_dequant(out, ref, "fp8_g128", what=f"FP8 {layout} {block} {scale_dtype} on {tier}, M={M}")
    finally:
        set_isa(None)


def test_physical_map_and_gpu_experts_read_only_cpu_experts(moe, tmp_path):
    """Slots take logical experts through physical_to_logical_map; GPU slots are never read."""
    path, (gate, up, down) = build_fp8(tmp_path / "ckpt")
    pmap = torch.tensor([5, 4, 3, 2, 1, 0])
    mask = torch.tensor([False, True, False, False, True, False])
    w = _wrapper(path, gpu_experts_mask=mask)
    w.load_weights(pmap)
    x, ids, wts = _inputs(9)
    act = kernel_row("fp8_g128", w.isa_tier)["act"]
    ref = reference.moe_forward(x.float(), ids, wts, gate, up, down, physical_to_logical_map=pmap.tolist(),
                                gpu_mask=mask.tolist(), act=act, slice_bounds=[0, I])
    moe.assert_close_dequant(w.forward(x, ids, wts), ref, "fp8_g128", what="FP8 with a map and GPU slots")


def test_only_method_fp8_reads_the_bytes_as_stored(tmp_path):
    path, _ = build_fp8(tmp_path / "ckpt")
    from kt_kernel.checkpoint import open_checkpoint
    assert open_checkpoint(path, "FP8").kind == "hf-fp8" and open_checkpoint(path).kind == "hf"


def _rewrite(path: Path, edit) -> None:
    from safetensors.torch import load_file
    t = load_file(str(path / "model.safetensors"))
    edit(t)
    save_file(t, str(path / "model.safetensors"))


def test_nan_code_is_refused_naming_the_expert(tmp_path):
    path, _ = build_fp8(tmp_path / "ckpt")
    key = f"model.layers.{LAYER}.mlp.experts.3.up_proj.weight"

    def poison(t):
        b = t[key].view(torch.uint8).clone()
        b[7, 9] = 0x7F
        t[key] = b.view(torch.float8_e4m3fn)
    _rewrite(path, poison)
    w = _wrapper(path)
    with pytest.raises(ValueError, match=r"up weights \(fp8_g128\) of logical expert 3: weight \[7, 9\] is an e4m3 NaN"):
        w.load_weights()


def test_non_finite_scale_is_refused_naming_the_tensor(tmp_path):
    path, _ = build_fp8(tmp_path / "ckpt", scale_dtype="ue8m0")
    key = f"model.layers.{LAYER}.mlp.experts.2.down_proj.weight_scale_inv"

    def poison(t):
        s = t[key].view(torch.uint8).clone()
        s[1, 0] = 255  # ue8m0 NaN
        t[key] = s.view(torch.float8_e8m0fnu)
    _rewrite(path, poison)
    with pytest.raises(ConversionError, match=rf"{key}\[1, 0\] is nan"):
        _wrapper(path).load_weights()


def test_block_other_than_128_along_k_is_refused(tmp_path):
    path, _ = build_fp8(tmp_path / "ckpt", block=(128, 64))
    with pytest.raises(ConversionError, match=r"weight_block_size is \[128, 64\].*\[any, 128\]"):
        _wrapper(path).load_weights()


def test_fp8_release_under_another_method_is_dequantized(tmp_path):
    """AMXINT8 on an FP8 release still quantizes the decoded floats (the float path), and FP8
    on it reads the bytes as stored: both close to the decoded layer."""
    path, (gate, up, down) = build_fp8(tmp_path / "ckpt")
    x, ids, wts = _inputs(5)
    exact = reference.moe_forward(x.float(), ids, wts, gate, up, down)
    for method in ("AMXINT8", "FP8"):
        w = KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                         moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method=method)
        w.load_weights()
        out = w.forward(x, ids, wts).double()
        rel = ((out - exact).norm() / exact.norm()).item()
        assert rel < (0.04 if method == "AMXINT8" else 0.01), (method, rel)


HOST_FEATURES = set(kt_kernel.cpu_info()["features"])
FP8_ROWS = [r["name"] for r in _ext.kernel_table()
            if r["format"] == "fp8_g128" and set(r["features"]) <= HOST_FEATURES]


@pytest.mark.parametrize("row", FP8_ROWS)
@pytest.mark.parametrize("rows", [1, 256])
def test_kernel_decodes_every_code_exactly(row, rows):
    """Every non-NaN e4m3 code at every k position, subnormals included: one-hot activations make
    each output one weight times a power-of-two scale, exact on every path (fp32 FMA, vdpbf16ps),
    so the down kernel must return the decoded weights bit for bit: W^T with 256 one-hot rows
    (prefill blocks), or single rows (decode)."""
    rng = np.random.default_rng(9)
    N, K = 32, 256
    codes = np.array([c for c in range(256) if c & 0x7F != 0x7F] + [0, 0], dtype=np.uint8)
    values = np.stack([rng.permutation(codes) for _ in range(N)])
    scale = np.ldexp(np.float32(1), rng.integers(-3, 4, (N, K // 128))).astype(np.float32)
    q = {"format": "fp8_g128", "N": N, "K": K, "values": values, "scale": scale}
    W = torch.from_numpy(values).view(torch.float8_e4m3fn).float().numpy() * np.repeat(scale, 128, axis=1)
    ks = np.arange(K) if rows == K else rng.choice(K, 8, replace=False)
    for chunk in ([ks] if rows == K else [[k] for k in ks]):
        h = np.zeros((len(chunk), K), np.float32)
        h[np.arange(len(chunk)), chunk] = 1.0
        out = _ext.kernel_down(row, q, h, np.arange(len(chunk), dtype=np.int32), np.ones(len(chunk), np.float32),
                               np.zeros((len(chunk), N), np.float32))
        np.testing.assert_array_equal(out, W[:, chunk].T, err_msg=f"{row}, k {list(chunk)[:4]}...")


def test_scale_of_another_block_shape_is_refused_naming_it(tmp_path):
    """A weight_scale_inv whose shape disagrees with weight_block_size raises, naming the tensor."""
    path, _ = build_fp8(tmp_path / "ckpt")
    key = f"model.layers.{LAYER}.mlp.experts.4.gate_proj.weight_scale_inv"
    _rewrite(path, lambda t: t.__setitem__(key, t[key][:1].contiguous()))
    with pytest.raises(ConversionError, match=rf"{key} has shape \(1, 2\), but weight_block_size \[128, 128\] makes it "
                                              r"\(2, 2\)"):
        _wrapper(path).load_weights()


def test_truncated_release_is_refused_naming_the_file(tmp_path):
    path, _ = build_fp8(tmp_path / "ckpt")
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(ConversionError, match="model.safetensors"):
        _wrapper(path).load_weights()


# The tiers whose fp8_g128 and bf16 rows read the same activations (x86's avx2 and avx512 read
# fp32 for both; a tier whose two rows differ would not compute the same products)
@pytest.mark.parametrize("tier", [t for t in HOST_TIERS if t != "generic" and
                                  kernel_row("fp8_g128", t)["act"] == kernel_row("bf16", t)["act"]])
def test_layer_equals_bf16_method_where_the_weights_are_bf16_values(tmp_path, tier):
    """With ue8m0 scales every weight of the release is a bf16 value: the FP8 layer must give the
    BF16 method's layer on the decoded weights, up to the fp32 sums' order (an independent kernel
    on the same products)."""
    path, (gate, up, down) = build_fp8(tmp_path / "ckpt", scale_dtype="ue8m0")
    assert torch.equal(gate.bfloat16().float(), gate) and torch.equal(down.bfloat16().float(), down)
    set_isa(tier)
    try:
        fp8 = _wrapper(path)
        fp8.load_weights()
        bf16 = KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                            moe_intermediate_size=I, cpuinfer_threads=2, method="BF16")
        bf16.load_weights_from_tensors(gate.bfloat16(), up.bfloat16(), down.bfloat16())
        for M in (1, 64):
            x, ids, wts = _inputs(M)
            a, b = fp8.forward(x, ids, wts).double(), bf16.forward(x, ids, wts).double()
            # fp32 sums that differ in their last bits (about 2^-24 of the terms, so 1e-6 of max|out|
            # bounds them) round to bf16 outputs at most one ulp apart
            v = torch.maximum(a.abs(), b.abs())
            ulp = torch.where(v > 0, torch.exp2(torch.floor(torch.log2(v)) - 7), torch.zeros_like(v))
            bound = ulp + 1e-6 * b.abs().max()
            assert torch.all((a - b).abs() <= bound), (tier, M, ((a - b).abs() - bound).max().item())
    finally:
        set_isa(None)
