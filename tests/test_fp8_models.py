"""Whole models from FP8 releases: the tiny reference models written as DeepSeek-V3 ships its
release (every linear weight e4m3 with 128 x 128 block scales, kt_kernel.models.fp8_model), run
with load_fp8_model (routed experts from the release's bytes through kt_kernel, method FP8;
everything else decoded) against the same release decoded whole by torch (load_fp8_reference),
in fp32, on the reference prompt: the weights are the same, so the activations' rounding is all
that separates them, well inside the FP8 format's agreement bounds."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from kt_kernel.integrations.transformers import kt_layers, load_fp8_model, load_fp8_reference  # noqa: E402
from kt_kernel.models import AGREEMENT_BOUNDS, ARCHITECTURES, CheckpointError, PrintableTokenizer  # noqa: E402
from kt_kernel.models import logit_agreement, teacher_forced_logits  # noqa: E402
from kt_kernel.models.compare import REFERENCE_PROMPT  # noqa: E402
from kt_kernel.models.fp8_model import write_fp8_release  # noqa: E402
from kt_kernel.threads import torch_threads  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def release(tiny, tmp_path_factory):
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = write_fp8_release(tiny(arch), tmp_path_factory.mktemp(f"fp8-{arch}"))
        return cache[arch]
    return get


# the architectures that ship FP8 releases (gpt-oss ships MXFP4: tests/test_mxfp4_models.py)
FP8_ARCHS = [a for a, row in ARCHITECTURES.items() if row.expert_layout == "per_expert"]


@pytest.mark.parametrize("arch", FP8_ARCHS)
@pytest.mark.parametrize("split", ["cpu", "half"])
def test_fp8_release_matches_its_decoded_model(release, arch, split):
    path = release(arch)
    prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    E = ARCHITECTURES[arch].tiny[ARCHITECTURES[arch].experts_field]
    ref = teacher_forced_logits(load_fp8_reference(path), prompt)
    model = load_fp8_model(path, dtype=torch.float32, cpuinfer_threads=1, num_gpu_experts=E // 2 if split == "half" else 0)
    layers = kt_layers(model)
    assert layers and all(k.wrapper.method == "FP8" and k.wrapper.formats == ("fp8_g128", "fp8_g128") for k in layers)
    agreement = logit_agreement(teacher_forced_logits(model, prompt), ref)
    print(f"{arch} {split}: {agreement}")
    # the same weights: only the activations' rounding differs (measured KL mean 6e-7 with fp32
    # activations, 1e-6 to 1.1e-4 with bf16 ones; the layers equal the BF16 method's on the same
    # weights where those are bf16 values: tests/test_fp8_release.py)
    assert agreement.within(AGREEMENT_BOUNDS["FP8"]), agreement


def test_fp8_release_under_another_method_is_refused_clearly(release):
    with pytest.raises(ValueError, match="an FP8 release's experts run as they are stored, with method 'FP8'"):
        load_fp8_model(release("qwen3_moe"), "AMXINT4")


def test_float_model_is_not_an_fp8_release(tiny):
    with pytest.raises(CheckpointError, match="not an FP8 release's F8_E4M3; load it with load_model"):
        load_fp8_model(tiny("qwen3_moe"))


def test_demo_writes_and_runs_an_fp8_release(tmp_path, capsys):
    """python -m kt_kernel.demo --method FP8: the tiny model written once as an FP8 release beside
    it, then run from it (experts as stored) against the release decoded; --model takes the release."""
    from kt_kernel.demo import model as demo_model

    args = ["--arch", "mixtral", "--method", "FP8", "--cache-dir", str(tmp_path), "--threads", "1",
            "--max-new-tokens", "8"]
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    for fragment in ("writing it as an FP8 release", "(mixtral, FP8 release, blocks [128, 128]): 2 layers, 2 MoE, 8 experts",
                     "the whole FP8 release decoded", "method        FP8 (fp8_g128)", "PASS: FP8"):
        assert fragment in out, f"{fragment!r} missing from the demo's output:\n{out}"
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    assert "writing it" not in out and "PASS: FP8" in out
    release = next(tmp_path.glob("models/*-fp8-release"))
    assert demo_model.main(["--model", str(release), "--method", "AMXINT4", "--threads", "1"]) == 2
    assert "is an FP8 release: run it with --method FP8" in capsys.readouterr().err
