"""Methods RAWINT4 and GPTQ_INT4 on compressed-tensors int4 releases (pack-quantized, group and
channel strategies, symmetric and asymmetric, bf16 and fp16 scales), written and decompressed by
the compressed-tensors package itself, the independent oracle: the loaded weights are its
decompression bit for bit, and the layer on every tier (the emulated AMX tiles too) is within
int4_g32_zp's bound of the float64 reference on them with the kernels' q8s activations. Bad
releases raise naming the tensor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402

import kt_kernel  # noqa: E402
import reference  # noqa: E402
from kt_kernel import KTMoEWrapper, set_isa  # noqa: E402
from kt_kernel.checkpoint import CompressedInt4Checkpoint, ConversionError  # noqa: E402

H, I, E, TOPK, LAYER = 256, 256, 6, 2, 1
HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
TEST_TIERS = HOST_TIERS + list(kt_kernel.cpu_info()["emulated_tiers"])


def _args(strategy="group", group=32, symmetric=True) -> QuantizationArgs:
    return QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy=strategy,
                            group_size=group if strategy == "group" else None)


def _compress(w: torch.Tensor, args: QuantizationArgs, scale_dtype):
    """compressed-tensors' tensors of w [N, K], and its decompression in fp32 (scales widened first,
    so that scale * (q - z) is not rounded again)."""
    N, K = w.shape
    g = args.group_size or K
    blocks = w.reshape(N, K // g, g)
    scale, zp = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    sd = {"weight": w, "weight_scale": scale.to(scale_dtype), "weight_zero_point": zp.to(torch.int8)}
    c = PackedQuantizationCompressor.compress(sd, scheme)
    wide = {**c, "weight_scale": c["weight_scale"].float()}
    return c, PackedQuantizationCompressor.decompress(wide, scheme)["weight"].float()


def build(path: Path, args: QuantizationArgs, scale_dtype=torch.bfloat16, seed=0):
    """A DeepSeek-V3-style release whose experts are compressed-tensors int4; its experts as
    compressed-tensors decompresses them, (gate, up, down) fp32 [E, N, K]."""
    path.mkdir(parents=True, exist_ok=True)
    q = {"quant_method": "compressed-tensors", "format": "pack-quantized",
         "config_groups": {"group_0": {"targets": ["Linear"], "weights": args.model_dump()}}, "ignore": ["lm_head"]}
    cfg = {"model_type": "deepseek_v3", "hidden_size": H, "moe_intermediate_size": I, "intermediate_size": 2 * I,
           "n_routed_experts": E, "num_experts_per_tok": TOPK, "num_hidden_layers": 2, "first_k_dense_replace": 1,
           "vocab_size": 32, "quantization_config": q}
    (path / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(seed)
    tensors, dec = {"model.embed_tokens.weight": torch.zeros(32, H, dtype=torch.bfloat16)}, [[], [], []]
    for e in range(E):
        for j, (name, (N, K)) in enumerate((("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I)))):
            w = torch.randn(N, K, generator=g) * K ** -0.5
            c, d = _compress(w, args, scale_dtype)
            for part, t in c.items():
                tensors[f"model.layers.{LAYER}.mlp.experts.{e}.{name}.{part}"] = t.contiguous()
            dec[j].append(d)
    save_file(tensors, str(path / "model.safetensors"))
    return path, tuple(torch.stack(d) for d in dec)


CASES = [("RAWINT4", _args("group", 32, True), torch.bfloat16),  # Kimi-K2-Thinking's scheme
         ("GPTQ_INT4", _args("group", 128, True), torch.float16),  # llm-compressor's W4A16
         ("GPTQ_INT4", _args("group", 64, True), torch.bfloat16),
         ("RAWINT4", _args("channel", None, True), torch.bfloat16),
         # asymmetric: scale * zero point needs up to 15 significant bits, beyond fp16's 11
         ("GPTQ_INT4", _args("group", 64, False), torch.bfloat16),
         ("RAWINT4", _args("group", 32, False), torch.float16)]
IDS = [f"{m}-{a.strategy}{a.group_size or ''}-{'sym' if a.symmetric else 'asym'}-{str(d)[6:]}" for m, a, d in CASES]


def _wrapper(path, method, **kw):
    return KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                        moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method=method, **kw)


@pytest.mark.parametrize("method,args,scale_dtype", CASES, ids=IDS)
def test_loaded_weights_are_the_decompression_bit_for_bit(tmp_path, method, args, scale_dtype):
    path, dec = build(tmp_path / "r", args, scale_dtype)
    ckpt = CompressedInt4Checkpoint(path, method)
    ckpt.check_layer(LAYER, method, H, I, E)
    with ckpt.layer_arrays(LAYER, set(range(E))) as arrays:
        for j, proj in enumerate(("gate", "up", "down")):
            for e in range(E):
                np.testing.assert_array_equal(reference.dequantize_int4_release(arrays, proj, e), dec[j][e].numpy(),
                                              err_msg=f"{proj} {e}")


@pytest.mark.parametrize("tier", TEST_TIERS)
@pytest.mark.parametrize("method,args,scale_dtype", CASES, ids=IDS)
def test_release_runs_as_stored(moe, tmp_path, tier, method, args, scale_dtype):
    if tier == "amx_emu" and args.symmetric:
        pytest.skip("the emulated tiles run the asymmetric cases (the same kernel; the emulator is slow)")
    path, (gate, up, down) = build(tmp_path / "r", args, scale_dtype)
    set_isa(tier)
    try:
        w = _wrapper(path, method, threadpool_count=2, chunked_prefill_size=128)
        w.load_weights()
        assert w.formats == ("int4_g32_zp", "int4_g32_zp")
        moe.check_release_layer(w, gate, up, down, f"{method} on {tier}")
    finally:
        set_isa(None)


def test_other_methods_and_save_are_refused(tmp_path):
    path, _ = build(tmp_path / "r", _args())
    with pytest.raises(ConversionError, match="compressed-tensors int4 experts: load it with method RAWINT4 or GPTQ_INT4"):
        _wrapper(path, "AMXINT4").load_weights()
    with pytest.raises(ValueError, match="cpu_save=True with method RAWINT4"):
        _wrapper(path, "RAWINT4", cpu_save=True)


def test_actorder_group_is_refused(tmp_path):
    path, _ = build(tmp_path / "r", _args())
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"] = "group"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="actorder is 'group'"):
        _wrapper(path, "RAWINT4").load_weights()


def test_asymmetric_release_loads_exactly_where_int4_g32_could_not(tmp_path):
    """An asymmetric release's scale * (zero point + 8) needs more significant bits than fp16 holds
    (so int4_g32's fp16 minimum could not hold it): int4_g32_zp keeps the integer zero point and the
    weights are still compressed-tensors' decompression bit for bit."""
    path, dec = build(tmp_path / "r", _args("group", 64, False), torch.float16)
    ckpt = CompressedInt4Checkpoint(path, "GPTQ_INT4")
    with ckpt.layer_arrays(LAYER, {0}) as arrays:
        d = arrays[("up", "scale")][0].view(np.float16).astype(np.float32)
        m = d * arrays[("up", "zero")][0].astype(np.float32)
        assert np.any(m.astype(np.float16).astype(np.float32) != m)
        np.testing.assert_array_equal(reference.dequantize_int4_release(arrays, "up", 0), dec[1][0].numpy())


def test_scale_beyond_fp16_is_refused_naming_it(tmp_path):
    path, _ = build(tmp_path / "r", _args(), torch.bfloat16)
    from safetensors.torch import load_file
    t = load_file(str(path / "model.safetensors"))
    key = f"model.layers.{LAYER}.mlp.experts.3.down_proj.weight_scale"
    t[key][2, 1] = 1e-9  # a bf16 value fp16 cannot hold
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ConversionError, match=rf"{key}\[2, 1\]: scale = .* is not an fp16 value"):
        _wrapper(path, "RAWINT4").load_weights()


def test_wrong_packed_shape_is_refused_naming_it(tmp_path):
    path, _ = build(tmp_path / "r", _args())
    from safetensors.torch import load_file
    t = load_file(str(path / "model.safetensors"))
    key = f"model.layers.{LAYER}.mlp.experts.0.up_proj.weight_packed"
    t[key] = t[key][:, :-1].contiguous()
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ConversionError, match=rf"{key} is I32 \(256, 31\).*\(256, 32\)"):
        _wrapper(path, "RAWINT4").load_weights()


@pytest.mark.parametrize("tier", [HOST_TIERS[0], HOST_TIERS[-1]])
def test_activation_rounding_is_per_group(tmp_path, tier):
    """The release's weights are exact, so the layer's error against the float64 layer on them with
    unrounded activations is the activations' int8 rounding alone: one scale per 32 values (q8_32)
    leaves about 0.012 on these layers, one per token (q8s, int4_g32's) 0.022; bound 0.015."""
    path, (gate, up, down) = build(tmp_path / "r", _args("group", 32, False), torch.bfloat16)
    set_isa(tier)
    try:
        w = _wrapper(path, "RAWINT4")
        w.load_weights()
        assert reference_act(w) == "q8_32"
        g = torch.Generator().manual_seed(5)
        for M in (1, 64):
            x = torch.randn(M, H, generator=g).bfloat16()
            ids = torch.stack([torch.randperm(E, generator=g)[:TOPK] for _ in range(M)])
            wts = torch.rand(M, TOPK, generator=g)
            ref = reference.moe_forward(x.float(), ids, wts, gate, up, down)
            out = w.forward(x, ids, wts).double()
            rel = float((out - ref).norm() / ref.norm())
            assert rel < 0.015, f"M={M} on {tier}: {rel:.4f}"
    finally:
        set_isa(None)


def reference_act(wrapper) -> str:
    from format_expectations import kernel_row
    return kernel_row(wrapper.formats[0], wrapper.isa_tier)["act"]


def test_float_weights_are_rounded_into_the_release_format(moe):
    """Float weights given to a release method are rounded to nearest into int4_g32_zp (its
    quantizer), within its layer bound of the fp32 layer."""
    shape = moe.Shape(8, 2, 128, 96)
    gate, up, down = moe.weights(shape)
    w = KTMoEWrapper(layer_idx=0, num_experts=8, num_experts_per_tok=2, hidden_size=128, moe_intermediate_size=96,
                     cpuinfer_threads=2, method="GPTQ_INT4")
    w.load_weights_from_tensors(gate, up, down)
    assert w.formats == ("int4_g32_zp", "int4_g32_zp")
    x, ids, wts = moe.inputs(shape, 64, seed=2)
    ref = reference.moe_forward(x, ids, wts, gate, up, down)
    moe.assert_close_fp32(w.forward(x, ids, wts), ref, "int4_g32_zp", what="GPTQ_INT4 from float weights")


def test_release_experts_write_back_as_bf16(tmp_path):
    """sglang-kt's write-back of a CPU expert from an asymmetric release: its weights exactly
    (compressed-tensors' decompression) rounded to bf16, gate rows then up rows, and down."""
    path, (gate, up, down) = build(tmp_path / "r", _args("group", 32, False), torch.bfloat16)
    w = _wrapper(path, "RAWINT4")
    w.load_weights()
    w13, w2 = torch.zeros(2 * I, H, dtype=torch.bfloat16), torch.zeros(H, I, dtype=torch.bfloat16)
    w.submit_write_weight_scale_to_buffer(1, 4, [w13.data_ptr()], [0], [w2.data_ptr()], [0])
    w.sync_write_weight_scale_to_buffer()
    assert torch.equal(w13, torch.cat([gate[4], up[4]]).bfloat16())
    assert torch.equal(w2, down[4].bfloat16())
