"""Whole models from compressed-tensors int4 releases: the tiny reference models written as
Kimi-K2-Thinking ships its release (routed experts pack-quantized by compressed-tensors' own
compressor, symmetric groups of 32 with bf16 scales; the rest bf16; kt_kernel.models.int4_model),
run with load_int4_model (routed experts from the release's packed words through kt_kernel,
methods RAWINT4 / GPTQ_INT4) against the same release with its experts decoded in transformers'
eager experts (load_int4_reference), in fp32, on the reference prompt. The decoding is checked
against compressed-tensors' own decompressor."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")

from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
from safetensors import safe_open  # noqa: E402

from kt_kernel.integrations.transformers import kt_layers, load_int4_model, load_int4_reference, load_model  # noqa: E402
from kt_kernel.models import ARCHITECTURES, PrintableTokenizer, UnsupportedModelError  # noqa: E402
from kt_kernel.models import logit_agreement, teacher_forced_logits  # noqa: E402
from kt_kernel.models.compare import REFERENCE_PROMPT, format_agreement_bounds  # noqa: E402
from kt_kernel.models.int4_model import int4_expert_weights, write_int4_release  # noqa: E402
from kt_kernel.threads import torch_threads  # noqa: E402

INT4_ARCHS = [a for a, row in ARCHITECTURES.items() if row.expert_layout == "per_expert"]
# the same weights on both sides: only the activations' int8 rounding per token separates them, as
# for the GGUF types against their dequantized models: int4_g32_zp's record bounds it (KL 3e-3,
# top-1 0.95; measured here KL mean 1e-4, top-1 >= 0.985)
BOUNDS = format_agreement_bounds("int4_g32_zp")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def release(tiny, tmp_path_factory):
    cache = {}

    def get(arch, symmetric=True):
        if (arch, symmetric) not in cache:
            cache[arch, symmetric] = write_int4_release(tiny(arch), tmp_path_factory.mktemp(f"int4-{arch}") / "r",
                                                        symmetric=symmetric)
        return cache[arch, symmetric]
    return get


def test_decoded_experts_are_compressed_tensors_decompression(release):
    path = release("deepseek_v3")
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    gate_up, down = int4_expert_weights(path, 1, [3, 30])
    I = ARCHITECTURES["deepseek_v3"].tiny["moe_intermediate_size"]
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for i, e in enumerate((3, 30)):
            for proj, ours in (("gate_proj", gate_up[i, :I]), ("up_proj", gate_up[i, I:]), ("down_proj", down[i])):
                base = f"model.layers.1.mlp.experts.{e}.{proj}"
                c = {p: f.get_tensor(f"{base}.{p}") for p in ("weight_packed", "weight_scale", "weight_shape")}
                c["weight_scale"] = c["weight_scale"].float()
                theirs = PackedQuantizationCompressor.decompress(c, scheme)["weight"].float()
                assert torch.equal(ours, theirs), base


@pytest.mark.parametrize("arch", INT4_ARCHS)
@pytest.mark.parametrize("split", ["cpu", "half", "cpu-asym"])
def test_release_matches_its_decoded_model(release, arch, split):
    """cpu-asym: an asymmetric release (zero points), all experts on kt_kernel."""
    path = release(arch, symmetric=split != "cpu-asym")
    prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    E = ARCHITECTURES[arch].tiny[ARCHITECTURES[arch].experts_field]
    ref = teacher_forced_logits(load_int4_reference(path), prompt)
    model = load_int4_model(path, dtype=torch.float32, cpuinfer_threads=1,
                            num_gpu_experts=E // 2 if split == "half" else 0)
    layers = kt_layers(model)
    assert layers and all(k.wrapper.method == "RAWINT4" and k.wrapper.formats == ("int4_g32_zp", "int4_g32_zp")
                          for k in layers if k.wrapper is not None)
    agreement = logit_agreement(teacher_forced_logits(model, prompt), ref)
    print(f"{arch} {split}: {agreement}")
    assert agreement.kl_mean <= BOUNDS.kl_mean and agreement.top1 >= BOUNDS.top1, agreement


def test_release_under_another_method_or_loader_is_refused_clearly(release):
    path = release("qwen3_moe")
    with pytest.raises(ValueError, match="int4 release's experts run as they are stored, with method RAWINT4 or GPTQ_INT4"):
        load_int4_model(path, "AMXINT4")
    with pytest.raises(UnsupportedModelError, match="compressed-tensors.*load_int4_model"):
        load_model(path)


def test_demo_writes_and_runs_an_int4_release(tmp_path, capsys):
    from kt_kernel.demo import model as demo_model

    args = ["--arch", "mixtral", "--method", "GPTQ_INT4", "--cache-dir", str(tmp_path), "--threads", "1",
            "--max-new-tokens", "8"]
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    for fragment in ("writing it as a compressed-tensors int4 release", "(mixtral, compressed-tensors int4 release, group 32)",
                     "the int4 release's experts decoded", "method        GPTQ_INT4 (int4_g32_zp)", "PASS: GPTQ_INT4"):
        assert fragment in out, f"{fragment!r} missing from the demo's output:\n{out}"
    release_dir = next(tmp_path.glob("models/*-int4-release"))
    assert demo_model.main(["--model", str(release_dir), "--method", "AMXINT4", "--threads", "1"]) == 2
    assert "is a compressed-tensors int4 release: run it with --method RAWINT4 or GPTQ_INT4" in capsys.readouterr().err


# ---- the converter: a release into kt_kernel's own formats --------------------------------------

@pytest.mark.parametrize("quant_method", ["int8", "int4"])
def test_converter_takes_an_int4_release(release, tmp_path, quant_method, moe):
    """convert_cpu_weights.py --input-type rawint4: the release's experts decoded (exactly, one at a
    time) then quantized to the target format, as a bf16 checkpoint's would be; the converted layer
    runs within the target format's bound of the fp32 layer on the release's own weights."""
    from kt_kernel import KTMoEWrapper
    from kt_kernel.convert import convert_checkpoint
    from kt_kernel.convert.cli import main as convert_main

    path = release("deepseek_v3")
    out = tmp_path / "conv"
    assert convert_main(["--input-path", str(path), "--input-type", "rawint4", "--output", str(out),
                         "--quant-method", quant_method, "--no-progress"]) == 0
    row = ARCHITECTURES["deepseek_v3"]
    E, H, I = row.tiny["n_routed_experts"], row.tiny["hidden_size"], row.tiny["moe_intermediate_size"]
    method = {"int8": "AMXINT8", "int4": "AMXINT4"}[quant_method]
    w = KTMoEWrapper(layer_idx=2, num_experts=E, num_experts_per_tok=4, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, weight_path=str(out), method=method)
    w.load_weights()
    gate_up, down = int4_expert_weights(path, 2)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:4] for _ in range(16)])
    wts = torch.rand(16, 4, generator=g)
    import reference
    ref = reference.moe_forward(x.float(), ids, wts, gate_up[:, :I], gate_up[:, I:], down)
    moe.assert_close_fp32(w.forward(x, ids, wts), ref, {"int8": "int8_pc", "int4": "int4_g32"}[quant_method],
                          f"{method} converted from an int4 release")
    with pytest.raises(Exception, match="--input-type bf16 but .* is a compressed-tensors pack-quantized or AutoGPTQ int4 release: use --input-type rawint4"):
        convert_checkpoint(path, tmp_path / "b", "int4", input_type="bf16", progress=False)


def test_converter_checks_the_input_type(tiny, tmp_path):
    from kt_kernel.convert import ConversionError, convert_checkpoint

    with pytest.raises(ConversionError, match="--input-type rawint4 but .* is not a compressed-tensors"):
        convert_checkpoint(tiny("qwen3_moe"), tmp_path / "a", "int4", input_type="rawint4", progress=False)
    with pytest.raises(ConversionError, match="--input-type mxfp4 but .* is not a gpt-oss MXFP4 release"):
        convert_checkpoint(tiny("qwen3_moe"), tmp_path / "b", "int4", input_type="mxfp4", progress=False)
