"""End to end from GGUF: the tiny models' routed experts written as GGUF files (one file with one
type, a split set mixing q4_K gate/up with q6_K down), run through KTMoEWrapper(method="LLAMAFILE")
inside transformers, against the same model whose experts are gguf's dequantization of the same
blocks in fp32: what differs is kt_kernel's kernels (and their q8 activations) alone. KL and top-1
over REFERENCE_PROMPT within the formats' agreement bounds; half the experts kept in torch ("GPU"
experts, the model's own bf16 weights in both runs) as well."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from kt_kernel.integrations.transformers import kt_layers, load_model, load_reference  # noqa: E402
from kt_kernel.models import ARCHITECTURES, PrintableTokenizer  # noqa: E402
from kt_kernel.models import logit_agreement, teacher_forced_logits  # noqa: E402
from kt_kernel.models.compare import REFERENCE_PROMPT, format_agreement_bounds  # noqa: E402
from kt_kernel.models.gguf_model import GGUF_ARCHITECTURES, write_experts_gguf  # noqa: E402
from kt_kernel.threads import torch_threads  # noqa: E402

# (gate/up type, down type, shards): a split set of mixed types as real files hold them, one of a
# 32-weight type, and the plain f16
CASES = [("q4_K", "q6_K", 2), ("q8_0", "q8_0", 1), ("f16", "f16", 1)]
# every other type once, all experts on kt_kernel
MORE_CASES = [("q4_0", "q5_1", 1), ("q4_1", "q5_0", 1), ("iq4_nl", "f32", 1), ("q2_K", "q3_K", 1),
              ("q5_K", "iq4_xs", 1), ("bf16", "q6_K", 1)]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("arch", list(GGUF_ARCHITECTURES))
@pytest.mark.parametrize("gate_up,down,shards,split",
                         [(*c, split) for c in CASES for split in ("cpu", "half")] + [(*c, "cpu") for c in MORE_CASES],
                         ids=[f"{g}-{d}-x{n}-{split}" for g, d, n in CASES for split in ("cpu", "half")]
                         + [f"{g}-{d}-x{n}-cpu" for g, d, n in MORE_CASES])
def test_gguf_experts_match_their_dequantized_model(tiny_256, tmp_path, arch, gate_up, down, shards, split):
    path = tiny_256(arch)
    files = write_experts_gguf(path, tmp_path / "experts.gguf", gate_up=gate_up, down=down, shards=shards)
    assert len(files) == shards
    prompt = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    E = ARCHITECTURES[arch].tiny[ARCHITECTURES[arch].experts_field]
    num_gpu = E // 2 if split == "half" else 0
    ref = teacher_forced_logits(load_reference(path, gguf_experts=files[-1], num_gpu_experts=num_gpu), prompt)
    model = load_model(path, "LLAMAFILE", dtype=torch.float32, weight_path=files[0], cpuinfer_threads=1,
                       num_gpu_experts=num_gpu)
    layers = kt_layers(model)
    assert layers and all(k.wrapper.method == "LLAMAFILE" for k in layers)
    agreement = logit_agreement(teacher_forced_logits(model, prompt), ref)
    print(f"{arch} {gate_up}/{down} x{shards} {split}: {agreement}")
    assert agreement.within(format_agreement_bounds(gate_up, down)), agreement


def test_llamafile_without_a_gguf_file_is_refused(tiny_256):
    with pytest.raises(ValueError, match="LLAMAFILE runs the experts of a GGUF file: give weight_path"):
        load_model(tiny_256("qwen3_moe"), "LLAMAFILE")


def test_demo_writes_and_runs_a_gguf_file(tmp_path, capsys):
    """python -m kt_kernel.demo --gguf PATH: the whole tiny model written to PATH, then run from it
    alone; a second run reads the file it finds there."""
    from kt_kernel.demo import model as demo_model

    path = tmp_path / "model.gguf"
    args = ["--gguf", str(path), "--arch", "mixtral", "--gguf-types", "q5_K,q8_0", "--cache-dir", str(tmp_path),
            "--threads", "1", "--max-new-tokens", "8"]
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    for fragment in (f"writing it to {path} (q5_K gate/up, q8_0 down, the rest q8_0)",
                     "model: Mixtral (mixtral, GGUF llama): 2 layers, 2 MoE, 8 experts top-2",
                     "the whole GGUF file dequantized", "method        LLAMAFILE (q5_K, q8_0)",
                     "vs fp32       top-1 agreement", "PASS: LLAMAFILE"):
        assert fragment in out, f"{fragment!r} missing from the demo's output:\n{out}"
    assert demo_model.main(args[:2] + ["--threads", "1", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "writing it" not in out and "PASS: LLAMAFILE" in out


def test_demo_runs_a_file_of_experts_beside_the_model(tiny_256, tmp_path, capsys):
    """--gguf PATH of a file of experts only: the rest of the model comes from the tiny model's folder."""
    from kt_kernel.demo import model as demo_model

    path = tmp_path / "experts.gguf"
    write_experts_gguf(tiny_256("qwen3_moe"), path, gate_up="q4_K", down="q6_K")
    args = ["--gguf", str(path), "--arch", "qwen3_moe", "--cache-dir", str(tmp_path), "--threads", "1",
            "--max-new-tokens", "8"]
    # the demo builds the same tiny model (I = 256) in its own cache folder
    assert demo_model.main(args) == 0
    out = capsys.readouterr().out
    for fragment in ("model: Qwen3-MoE (qwen3_moe)", "the GGUF experts dequantized", "method        LLAMAFILE (q4_K, q6_K)",
                     "PASS: LLAMAFILE"):
        assert fragment in out, f"{fragment!r} missing from the demo's output:\n{out}"


def test_demo_refuses_a_whole_gguf_file_with_a_model_folder(tmp_path, tiny_256, capsys):
    from kt_kernel.demo import model as demo_model
    from kt_kernel.models.gguf_model import write_model_gguf

    path = write_model_gguf(tiny_256("qwen3_moe"), tmp_path / "model.gguf", gate_up="q8_0", down="q8_0")[0]
    assert demo_model.main(["--gguf", str(path), "--model", str(tiny_256("qwen3_moe"))]) == 2
    assert "holds a whole model; --model" in capsys.readouterr().err


def test_demo_refuses_a_missing_gguf_file_for_a_real_model(tmp_path):
    from kt_kernel.demo import model as demo_model

    with pytest.raises(SystemExit):
        demo_model.parse_args(["--model", str(tmp_path), "--gguf", str(tmp_path / "none.gguf")])
