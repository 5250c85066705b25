"""Methods GPTQ_INT4 and RAWINT4 on AutoGPTQ / GPTQModel int4 releases (quant_method "gptq": qweight
packed along K, qzeros packed along N, scales, g_idx; checkpoint_format gptq and gptq_v2).

The oracle is the integers the test draws, not a reading of the file: the release is written from
drawn q, zero points and scales by this file's own packer (the layout as AutoGPTQ documents it:
value k = 8i + j at bits 4j of qweight row i, the zero point of column 8c + j at bits 4j of qzeros
column c, v1 storing it minus one), and the loaded weights must be scale * (q - z) bit for bit; the
layer on every tier (the emulated AMX tiles too) is within int4_g32_zp's bound of the float64
reference on those weights. Bad releases raise naming the field or tensor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import kt_kernel
import reference
from kt_kernel import KTMoEWrapper, set_isa
from kt_kernel.checkpoint import AutoGptqCheckpoint, ConversionError, open_checkpoint

H, I, E, TOPK, LAYER = 256, 256, 6, 2, 1
HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
TEST_TIERS = HOST_TIERS + list(kt_kernel.cpu_info()["emulated_tiers"])
PROJS = (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I)))


def _pack_along_rows(v: np.ndarray) -> np.ndarray:
    """int32 [R / 8, C] of 4-bit values v [R, C]: value 8i + j of a column at bits 4j of word i."""
    w = np.zeros((v.shape[0] // 8, v.shape[1]), np.uint32)
    for j in range(8):
        w |= v[j::8].astype(np.uint32) << np.uint32(4 * j)
    return w.view(np.int32)


def _pack_along_columns(v: np.ndarray) -> np.ndarray:
    """int32 [R, ceil(C / 8)] of 4-bit values v [R, C]: column 8c + j at bits 4j of word c."""
    R, C = v.shape
    padded = np.zeros((R, -(-C // 8) * 8), np.uint32)
    padded[:, :C] = v
    w = np.zeros((R, padded.shape[1] // 8), np.uint32)
    for j in range(8):
        w |= padded[:, j::8] << np.uint32(4 * j)
    return w.view(np.int32)


def _projection(rng, N: int, K: int, group: int, symmetric: bool, fmt: str):
    """AutoGPTQ tensors of one projection and its weights scale * (q - z), fp32 [N, K] (exact: fp16
    scales of all 11 significant bits, zero points 0..15, or 1..16 in v1's gptq layout, which stores
    z - 1 in 4 bits)."""
    g = K if group == -1 else group
    q = rng.integers(0, 16, (N, K))
    z = np.full((N, K // g), 8) if symmetric else rng.integers(fmt == "gptq", 16 + (fmt == "gptq"), (N, K // g))
    s = (rng.integers(1024, 2048, (N, K // g)) * 2.0 ** rng.integers(-20, -14, (N, K // g))).astype(np.float16)
    w = s.astype(np.float32).repeat(g, axis=1) * (q - z.repeat(g, axis=1))
    stored_z = z - (1 if fmt == "gptq" else 0)
    t = {"qweight": _pack_along_rows(q.T), "qzeros": _pack_along_columns(stored_z.T), "scales": s.T.copy(),
         "g_idx": (np.arange(K) // g).astype(np.int32)}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}, torch.from_numpy(w)


def build(path: Path, group=128, symmetric=True, fmt="gptq", seed=0, **qc):
    """A Qwen3-MoE-style AutoGPTQ release; its experts' weights (gate, up, down) fp32 [E, N, K]."""
    path.mkdir(parents=True, exist_ok=True)
    q = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": symmetric,
         "checkpoint_format": fmt, **qc}
    cfg = {"model_type": "qwen3_moe", "hidden_size": H, "moe_intermediate_size": I, "intermediate_size": 2 * I,
           "num_experts": E, "num_experts_per_tok": TOPK, "num_hidden_layers": 2, "vocab_size": 32,
           "quantization_config": q}
    (path / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    tensors, weights = {"model.embed_tokens.weight": torch.zeros(32, H, dtype=torch.bfloat16)}, [[], [], []]
    for layer in range(2):
        for e in range(E):
            for j, (name, (N, K)) in enumerate(PROJS):
                t, w = _projection(rng, N, K, group, symmetric, fmt)
                for part, v in t.items():
                    tensors[f"model.layers.{layer}.mlp.experts.{e}.{name}.{part}"] = v
                if layer == LAYER:
                    weights[j].append(w)
    save_file(tensors, str(path / "model.safetensors"))
    return path, tuple(torch.stack(w) for w in weights)


def _wrapper(path, method="GPTQ_INT4", **kw):
    return KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                        moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method=method, **kw)


def _edit(path: Path, key: str, fn) -> None:
    t = load_file(str(path / "model.safetensors"))
    t[key] = fn(t[key])
    save_file(t, str(path / "model.safetensors"))


def _edit_config(path: Path, **q) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"].update(q)
    (path / "config.json").write_text(json.dumps(cfg))


CASES = [(128, True, "gptq"),  # Qwen's *-GPTQ-Int4 releases
         (32, True, "gptq"), (64, False, "gptq"), (128, False, "gptq_v2"), (-1, True, "gptq")]
IDS = [f"g{g}-{'sym' if s else 'asym'}-{f}" for g, s, f in CASES]


@pytest.mark.parametrize("group,symmetric,fmt", CASES, ids=IDS)
def test_loaded_weights_are_the_drawn_weights_bit_for_bit(tmp_path, group, symmetric, fmt):
    path, weights = build(tmp_path / "r", group, symmetric, fmt)
    ckpt = open_checkpoint(path, "GPTQ_INT4")
    assert isinstance(ckpt, AutoGptqCheckpoint) and ckpt.kind == "autogptq-int4"
    ckpt.check_layer(LAYER, "GPTQ_INT4", H, I, E)
    with ckpt.layer_arrays(LAYER, set(range(E))) as arrays:
        for j, proj in enumerate(("gate", "up", "down")):
            for e in range(E):
                np.testing.assert_array_equal(reference.dequantize_int4_release(arrays, proj, e),
                                              weights[j][e].numpy(), err_msg=f"{proj} {e}")
    for j in range(3):
        np.testing.assert_array_equal(ckpt.decode(LAYER, 4, j), weights[j][4].numpy())


@pytest.mark.parametrize("tier", TEST_TIERS)
@pytest.mark.parametrize("group,symmetric,fmt", CASES[:4], ids=IDS[:4])
def test_release_runs_as_stored(moe, tmp_path, tier, group, symmetric, fmt):
    if tier == "amx_emu" and symmetric:
        pytest.skip("the emulated tiles run the asymmetric cases (the same kernel; the emulator is slow)")
    path, (gate, up, down) = build(tmp_path / "r", group, symmetric, fmt)
    set_isa(tier)
    try:
        w = _wrapper(path, threadpool_count=2, chunked_prefill_size=128)
        pmap = torch.tensor([2, 0, 5, 1, 4, 3])
        w.load_weights(pmap)
        assert w.formats == ("int4_g32_zp", "int4_g32_zp")
        moe.check_release_layer(w, gate, up, down, f"g{group} on {tier}", physical_to_logical_map=pmap.tolist())
    finally:
        set_isa(None)


def test_rawint4_reads_it_too_and_other_methods_are_refused(tmp_path):
    path, _ = build(tmp_path / "r")
    _wrapper(path, "RAWINT4").load_weights()
    with pytest.raises(ConversionError, match="holds AutoGPTQ int4 experts: load it with method RAWINT4 or GPTQ_INT4"):
        _wrapper(path, "AMXINT4").load_weights()


@pytest.mark.parametrize("field,value,match", [
    ("desc_act", True, "desc_act is true"),
    ("bits", 8, "bits is 8"),
    ("group_size", 48, "group_size is 48"),
    ("checkpoint_format", "marlin", "checkpoint_format is 'marlin'"),
    ("dynamic", {"-:.*down_proj": {}}, "dynamic"),
])
def test_unsupported_quantization_config_names_the_field(tmp_path, field, value, match):
    path, _ = build(tmp_path / "r")
    _edit_config(path, **{field: value})
    with pytest.raises(ConversionError, match=rf"config.json: quantization_config.{match}"):
        _wrapper(path).load_weights()


def test_activation_order_g_idx_is_refused_naming_it(tmp_path):
    path, _ = build(tmp_path / "r")
    key = f"model.layers.{LAYER}.mlp.experts.2.up_proj.g_idx"
    _edit(path, key, lambda t: t.flip(0).contiguous())
    with pytest.raises(ConversionError, match=rf"{key}: the group of each k is not k // 128"):
        _wrapper(path).load_weights()


def test_nonzero_expert_bias_is_refused_naming_it(tmp_path):
    path, _ = build(tmp_path / "r")
    t = load_file(str(path / "model.safetensors"))
    key = f"model.layers.{LAYER}.mlp.experts.1.down_proj.bias"
    t[key] = torch.zeros(H, dtype=torch.float16)
    save_file(t, str(path / "model.safetensors"))
    _wrapper(path).load_weights()  # zero biases (AutoGPTQ writes them) load
    _edit(path, key, lambda b: b + 1)
    with pytest.raises(ConversionError, match=rf"{key}: expert biases are not supported"):
        _wrapper(path).load_weights()


def test_asymmetric_scale_beyond_fp16_loads_exactly(tmp_path):
    """scale 2047 * 2^-17 (all 11 of fp16's significant bits) times zero point 3 needs 13, which
    int4_g32's fp16 minimum could not hold: int4_g32_zp keeps the zero point, and the weights are
    still scale * (q - z) bit for bit."""
    path, weights = build(tmp_path / "r", 64, False)
    prefix = f"model.layers.{LAYER}.mlp.experts.3.gate_proj"
    t = load_file(str(path / "model.safetensors"))
    s0 = float(t[f"{prefix}.scales"][1, 5])  # the drawn scale and zero point of column 5, group 1
    z0 = ((int(t[f"{prefix}.qzeros"][1, 0]) >> 20) & 0xF) + 1  # bits 20..23 of word (1, 0), v1: minus one
    want = weights[0][3].numpy().copy()
    q = want[5, 64:128] / np.float32(s0) + z0  # the drawn q of those weights
    s = np.float32(2047 * 2.0**-17)
    want[5, 64:128] = s * (q - 3)

    def scale(x):
        x = x.clone()
        x[1, 5] = float(s)
        return x

    def zero_point_3(z):
        z = z.clone()
        z[1, 0] = (z[1, 0] & ~(0xF << 20)) | (2 << 20)
        return z

    _edit(path, f"{prefix}.scales", scale)
    _edit(path, f"{prefix}.qzeros", zero_point_3)
    assert np.float16(s * 3) != s * 3  # beyond fp16
    np.testing.assert_array_equal(open_checkpoint(path, "GPTQ_INT4").decode(LAYER, 3, 0), want)


@pytest.mark.parametrize("part,shape", [("qweight", (H // 8 + 1, I)), ("qzeros", (3, I // 8)), ("scales", (I, 2))])
def test_wrong_shapes_are_refused_naming_the_tensor(tmp_path, part, shape):
    path, _ = build(tmp_path / "r")
    key = f"model.layers.{LAYER}.mlp.experts.0.gate_proj.{part}"
    _edit(path, key, lambda t: torch.zeros(shape, dtype=t.dtype))
    with pytest.raises(ConversionError, match=rf"{key} is "):
        _wrapper(path).load_weights()


def test_missing_tensor_is_refused_naming_it(tmp_path):
    path, _ = build(tmp_path / "r")
    t = load_file(str(path / "model.safetensors"))
    del t[f"model.layers.{LAYER}.mlp.experts.5.down_proj.qzeros"]
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ConversionError, match=f"layer {LAYER} expert 5 down has no qzeros"):
        _wrapper(path).load_weights()


def test_converter_takes_it_as_rawint4(moe, tmp_path):
    """kt-convert-cpu-weights --input-type rawint4 on an AutoGPTQ release: the experts decoded
    exactly, then quantized to int8; the non-expert tensors copied as stored."""
    from kt_kernel.convert import convert_checkpoint

    path, (gate, up, down) = build(tmp_path / "r", 64, False)
    out = tmp_path / "c"
    meta = convert_checkpoint(path, out, "int8", input_type="rawint4", progress=False)
    assert meta["source"]["layout"] == "AutoGPTQ", meta["source"]
    w = KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, weight_path=str(out), method="AMXINT8")
    w.load_weights()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:TOPK] for _ in range(16)])
    wts = torch.rand(16, TOPK, generator=g)
    ref = reference.moe_forward(x.float(), ids, wts, gate, up, down)
    moe.assert_close_fp32(w.forward(x, ids, wts), ref, "int8_pc", "AMXINT8 converted from an AutoGPTQ release")


def _unpack(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """The test's own reading of an AutoGPTQ layer (value k = 8i + j at bits 4j of qweight row i,
    column 8c + j's zero point at bits 4j of qzeros column c, stored minus one): fp32 [N, K]."""
    K, N = qweight.shape[0] * 8, qweight.shape[1]
    w = qweight.numpy().view(np.uint32).astype(np.int64)
    q = np.stack([(w >> (4 * j)) & 0xF for j in range(8)], axis=1).reshape(K, N)
    zw = qzeros.numpy().view(np.uint32).astype(np.int64)
    z = np.stack([(zw >> (4 * j)) & 0xF for j in range(8)], axis=2).reshape(zw.shape[0], -1)[:, :N] + offset
    g = K // scales.shape[0]
    s = scales.float().numpy()
    return torch.from_numpy((s.repeat(g, axis=0) * (q - z.repeat(g, axis=0))).T.astype(np.float32))


@pytest.fixture(scope="module")
def gptq_release(tiny, tmp_path_factory):
    from kt_kernel.models.int4_model import write_autogptq_release

    cache = {}

    def get(arch, symmetric=True):
        if (arch, symmetric) not in cache:
            cache[arch, symmetric] = write_autogptq_release(tiny(arch), tmp_path_factory.mktemp(f"gptq-{arch}") / "r",
                                                            symmetric=symmetric)
        return cache[arch, symmetric]
    return get


def test_written_release_reads_back_as_the_layout_says(gptq_release):
    """write_autogptq_release's tensors, read by this file's own unpacking, are the weights the
    whole-model reader gives transformers (attention, shared expert) and kt_kernel (routed experts)."""
    from safetensors import safe_open

    from kt_kernel.integrations.transformers import load_int4_reference
    from kt_kernel.models.int4_model import int4_expert_weights

    path = gptq_release("deepseek_v3")
    I = json.loads((path / "config.json").read_text())["moe_intermediate_size"]
    ref = load_int4_reference(path).state_dict()
    gate_up, down = int4_expert_weights(path, 1, [5])
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        def layer(base):
            return _unpack(*(f.get_tensor(f"{base}.{p}") for p in ("qweight", "qzeros", "scales")))
        assert torch.equal(gate_up[0, :I], layer("model.layers.1.mlp.experts.5.gate_proj"))
        assert torch.equal(down[0], layer("model.layers.1.mlp.experts.5.down_proj"))
        for name in ("model.layers.1.self_attn.o_proj", "model.layers.1.mlp.shared_experts.up_proj",
                     "model.layers.0.mlp.down_proj"):
            assert torch.equal(ref[f"{name}.weight"], layer(name)), name
        assert "model.layers.1.mlp.gate.weight" in f.keys()  # the router stays as it was


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3", "mixtral"])
@pytest.mark.parametrize("split", ["cpu", "half", "cpu-asym"])
def test_whole_release_matches_its_decoded_model(gptq_release, arch, split):
    """load_int4_model on an AutoGPTQ release (routed experts from the packed words through
    kt_kernel, the other packed layers decoded into transformers) against the same release with
    its experts decoded in transformers' eager experts: only the activations' int8 rounding per
    token separates them (int4_g32_zp's record bounds it). cpu-asym: an asymmetric release, all
    experts on kt_kernel."""
    from kt_kernel.integrations.transformers import kt_layers, load_int4_model, load_int4_reference
    from kt_kernel.models import ARCHITECTURES, PrintableTokenizer, logit_agreement, teacher_forced_logits
    from kt_kernel.models.compare import REFERENCE_PROMPT, format_agreement_bounds
    from kt_kernel.threads import torch_threads

    path = gptq_release(arch, symmetric=split != "cpu-asym")
    E = ARCHITECTURES[arch].tiny[ARCHITECTURES[arch].experts_field]
    with torch_threads(1):
        prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
        ref = teacher_forced_logits(load_int4_reference(path), prompt)
        model = load_int4_model(path, "GPTQ_INT4", dtype=torch.float32, cpuinfer_threads=1,
                                num_gpu_experts=E // 2 if split == "half" else 0)
        assert all(k.wrapper.method == "GPTQ_INT4" and k.wrapper.formats == ("int4_g32_zp", "int4_g32_zp")
                   for k in kt_layers(model) if k.wrapper is not None)
        agreement = logit_agreement(teacher_forced_logits(model, prompt), ref)
    print(f"{arch} {split}: {agreement}")
    bounds = format_agreement_bounds("int4_g32_zp")
    assert agreement.kl_mean <= bounds.kl_mean and agreement.top1 >= bounds.top1, agreement
