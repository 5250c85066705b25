"""Whole gpt-oss models from MXFP4 releases: the tiny gpt-oss model written as gpt-oss ships
(routed experts as e2m1 blocks with ue8m0 scales, kt_kernel.models.mxfp4_model), run with
load_mxfp4_model (routed experts from the release's blocks through kt_kernel, method MXFP4, with
their biases and clamped SwiGLU) against the same release with its experts decoded, in
transformers' eager gpt-oss (load_mxfp4_reference), in fp32, on the reference prompt. The decoding
itself is checked against transformers' own MXFP4 dequantization."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from kt_kernel.integrations.transformers import (kt_layers, load_model, load_mxfp4_model,  # noqa: E402
                                                 load_mxfp4_reference)
from kt_kernel.models import ARCHITECTURES, PrintableTokenizer, UnsupportedModelError  # noqa: E402
from kt_kernel.models import logit_agreement, teacher_forced_logits  # noqa: E402
from kt_kernel.models.compare import REFERENCE_PROMPT  # noqa: E402
from kt_kernel.models.mxfp4_model import mxfp4_expert_weights, write_mxfp4_release  # noqa: E402
from kt_kernel.threads import torch_threads  # noqa: E402

# the same weights on both sides: only the activations' rounding to int8 per 32 values separates
# them, as for the GGUF types against their dequantized models (bound KL 3e-3, top-1 0.95, measured
# here KL mean 4e-5 to 1.5e-4)
KL_MEAN, TOP1 = 3e-3, 0.95


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def release(tiny, tmp_path_factory):
    return write_mxfp4_release(tiny("gpt_oss"), tmp_path_factory.mktemp("mxfp4") / "gpt-oss")


def test_decoded_experts_are_transformers_dequantization(release):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    with safe_open(str(release / "model.safetensors"), "pt") as f:
        for proj, i in (("gate_up_proj", 0), ("down_proj", 1)):
            theirs = convert_moe_packed_tensors(f.get_tensor(f"model.layers.1.mlp.experts.{proj}_blocks"),
                                                f.get_tensor(f"model.layers.1.mlp.experts.{proj}_scales"),
                                                dtype=torch.float32)
            assert torch.equal(mxfp4_expert_weights(release, 1)[i], theirs), proj


def test_release_keeps_the_float_models_biases_and_is_close_to_its_weights(tiny, release):
    with safe_open(str(tiny("gpt_oss") / "model.safetensors"), "pt") as src, \
            safe_open(str(release / "model.safetensors"), "pt") as rel:
        key = "model.layers.0.mlp.experts.gate_up_proj"
        assert torch.equal(src.get_tensor(key + "_bias"), rel.get_tensor(key + "_bias"))
        w, q = src.get_tensor(key).float(), mxfp4_expert_weights(release, 0)[0]
        assert ((w - q).norm() / w.norm()).item() < 0.145  # the mxfp4 quantizer's weight_rel_err bound


@pytest.mark.parametrize("split", ["cpu", "half"])
def test_release_matches_its_decoded_model(release, split):
    prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    E = ARCHITECTURES["gpt_oss"].tiny["num_local_experts"]
    ref = teacher_forced_logits(load_mxfp4_reference(release), prompt)
    model = load_mxfp4_model(release, dtype=torch.float32, cpuinfer_threads=1,
                             num_gpu_experts=E // 2 if split == "half" else 0)
    layers = kt_layers(model)
    assert layers and all(k.wrapper.method == "MXFP4" and k.wrapper.formats == ("mxfp4", "mxfp4") and
                          (k.wrapper.swiglu_limit, k.wrapper.swiglu_alpha) == (7.0, 1.702) for k in layers)
    agreement = logit_agreement(teacher_forced_logits(model, prompt), ref)
    print(f"gpt_oss {split}: {agreement}")
    assert agreement.kl_mean <= KL_MEAN and agreement.top1 >= TOP1, agreement


def test_release_under_another_method_or_loader_is_refused_clearly(release):
    with pytest.raises(ValueError, match="an MXFP4 release's experts run as they are stored, with method 'MXFP4'"):
        load_mxfp4_model(release, "AMXINT4")
    with pytest.raises(UnsupportedModelError, match="quant_method 'mxfp4'.*load_mxfp4_model"):
        load_model(release)


def test_demo_writes_and_runs_an_mxfp4_release(tmp_path, capsys):
    """python -m kt_kernel.demo --arch gpt_oss --method MXFP4: the tiny gpt-oss written once as an
    MXFP4 release beside it, then run from it against the release decoded."""
    from kt_kernel.demo import model as demo_model

    args = ["--arch", "gpt_oss", "--method", "MXFP4", "--cache-dir", str(tmp_path), "--threads", "1",
            "--max-new-tokens", "8"]
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    for fragment in ("writing it as gpt-oss's MXFP4 release", "(gpt_oss, MXFP4 release, swiglu_limit 7): 2 layers",
                     "the MXFP4 release's experts decoded", "method        MXFP4 (mxfp4)", "PASS: MXFP4"):
        assert fragment in out, f"{fragment!r} missing from the demo's output:\n{out}"
    release = next(tmp_path.glob("models/*-mxfp4-release"))
    assert demo_model.main(["--model", str(release), "--method", "AMXINT4", "--threads", "1"]) == 2
    assert "is an MXFP4 release: run it with --method MXFP4" in capsys.readouterr().err


def test_float_gpt_oss_checkpoint_loads_with_its_biases_and_activation(tiny, moe):
    """A bf16 gpt-oss checkpoint through KTMoEWrapper.load_weights (quantized at load): gate and up
    from the interleaved rows of the fused tensor, the biases and clamped SwiGLU from the
    checkpoint (not the halves of gate_up, not plain SwiGLU)."""
    import reference
    from kt_kernel import KTMoEWrapper

    path = tiny("gpt_oss")
    row = ARCHITECTURES["gpt_oss"]
    E, H, I = row.tiny["num_local_experts"], row.tiny["hidden_size"], row.tiny["intermediate_size"]
    w = KTMoEWrapper(layer_idx=1, num_experts=E, num_experts_per_tok=4, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, weight_path=str(path), method="BF16")
    assert (w.swiglu_limit, w.swiglu_alpha) == (7.0, 1.702)
    w.load_weights()
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        t = {k: f.get_tensor(f"model.layers.1.mlp.experts.{k}").float()
             for k in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")}
    gate, up = t["gate_up_proj"][:, :, 0::2].transpose(1, 2), t["gate_up_proj"][:, :, 1::2].transpose(1, 2)
    glu = {"gate_bias": t["gate_up_proj_bias"][:, 0::2], "up_bias": t["gate_up_proj_bias"][:, 1::2],
           "down_bias": t["down_proj_bias"], "limit": 7.0, "alpha": 1.702}
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:4] for _ in range(12)])
    wts = torch.softmax(torch.randn(12, 4, generator=g), -1)
    ref = reference.moe_forward(x.float(), ids, wts, gate, up, t["down_proj"].transpose(1, 2), glu=glu)
    moe.assert_close_fp32(w.forward(x, ids, wts), ref, "bf16", "a bf16 gpt-oss checkpoint loaded by path")


@pytest.mark.parametrize("source", ["bf16", "mxfp4"])
def test_converter_keeps_gpt_oss_biases(tiny, release, tmp_path, moe, source):
    """convert_cpu_weights.py on a gpt-oss checkpoint (bf16, or the MXFP4 release with
    --input-type mxfp4): the experts quantized to AMXINT8, their biases stored beside them and the
    config (its clamped SwiGLU) copied; the converted layer computes gpt-oss's experts within
    AMXINT8's bound of the fp32 layer on the source's weights."""
    import reference
    from kt_kernel import KTMoEWrapper
    from kt_kernel.checkpoint import ConvertedCheckpoint
    from kt_kernel.convert.cli import main as convert_main

    src = tiny("gpt_oss") if source == "bf16" else release
    out = tmp_path / "conv"
    args = ["--input-path", str(src), "--output", str(out), "--quant-method", "int8", "--no-progress"]
    assert convert_main(args + (["--input-type", "mxfp4"] if source == "mxfp4" else [])) == 0
    row = ARCHITECTURES["gpt_oss"]
    E, H, I = row.tiny["num_local_experts"], row.tiny["hidden_size"], row.tiny["intermediate_size"]
    biases = ConvertedCheckpoint(out).layer_biases(1)
    assert [b.shape for b in biases] == [(E, I), (E, I), (E, H)]
    w = KTMoEWrapper(layer_idx=1, num_experts=E, num_experts_per_tok=4, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, weight_path=str(out), method="AMXINT8")
    assert (w.swiglu_limit, w.swiglu_alpha) == (7.0, 1.702)
    w.load_weights()
    if source == "mxfp4":
        gate_up, down = mxfp4_expert_weights(release, 1)
    else:
        with safe_open(str(src / "model.safetensors"), "pt") as f:
            gate_up, down = (f.get_tensor(f"model.layers.1.mlp.experts.{k}").float() for k in ("gate_up_proj", "down_proj"))
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        gub, db = (f.get_tensor(f"model.layers.1.mlp.experts.{k}_bias").float() for k in ("gate_up_proj", "down_proj"))
    glu = {"gate_bias": gub[:, 0::2], "up_bias": gub[:, 1::2], "down_bias": db, "limit": 7.0, "alpha": 1.702}
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:4] for _ in range(10)])
    wts = torch.softmax(torch.randn(10, 4, generator=g), -1)
    ref = reference.moe_forward(x.float(), ids, wts, gate_up[:, :, 0::2].transpose(1, 2), gate_up[:, :, 1::2].transpose(1, 2),
                                down.transpose(1, 2), glu=glu)
    moe.assert_close_fp32(w.forward(x, ids, wts), ref, "int8_pc", f"AMXINT8 converted from gpt-oss {source}")
