"""Whole models from GGUF files: the tiny models written as llama.cpp lays a model out (every
tensor, the configuration in metadata; kt_kernel.models.gguf_model) and run from the file alone,
the routed experts through KTMoEWrapper(method="LLAMAFILE"), everything else dequantized by gguf.

Independent checks of the file: the configuration and every tensor read back equal the Hugging
Face checkpoint's; transformers' own GGUF reader reads the qwen3_moe file as the same model and
un-permutes Mixtral's q/k rows into the checkpoint's. The end-to-end comparison is against the
same file dequantized in fp32 (experts too) in transformers' eager experts: what differs is
kt_kernel's kernels and their q8 activations alone, within the formats' agreement bounds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from kt_kernel.integrations.transformers import (kt_layers, load_gguf_model, load_gguf_reference,  # noqa: E402
                                                 load_reference)
from kt_kernel.models import (ARCHITECTURES, CheckpointError, PrintableTokenizer, UnsupportedModelError,  # noqa: E402
                              logit_agreement, teacher_forced_logits)
from kt_kernel.models.compare import REFERENCE_PROMPT, format_agreement_bounds  # noqa: E402
from kt_kernel.checkpoint.gguf import GGUFError  # noqa: E402
from kt_kernel.models.gguf_model import (GGUF_ARCHITECTURES, gguf_config, gguf_expert_weights, gguf_state_dict,  # noqa: E402
                                         write_experts_gguf, write_model_gguf)
from kt_kernel.threads import torch_threads  # noqa: E402

PROMPT = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
# config fields that name the checkpoint or the library, not the model
_NOT_MODEL = {"architectures", "transformers_version", "dtype", "_name_or_path"}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(1):
        yield


def _meta_model(config):
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("arch,split_kv_b", [(a, True) for a in GGUF_ARCHITECTURES] + [("deepseek_v3", False)],
                         ids=list(GGUF_ARCHITECTURES) + ["deepseek_v3-kv_b-whole"])
def test_the_file_reads_back_as_the_checkpoint(tiny_256, tmp_path, arch, split_kv_b):
    """f32 outside the experts: the config from the metadata equals config.json's, every tensor
    equals the checkpoint's bit for bit, and the model's logits equal those of the checkpoint with
    the same dequantized experts (the Hugging Face folder route). DeepSeek's kv_b_proj is read from
    the split attn_k_b / attn_v_b of current conversions and from the older whole attn_kv_b."""
    path = tiny_256(arch)
    file = write_model_gguf(path, tmp_path / "m.gguf", gate_up="q4_K", down="q6_K", split_kv_b=split_kv_b)[0]
    names = {t.name for t in gguf.GGUFReader(file).tensors}
    if arch == "deepseek_v3":
        assert ("blk.1.attn_k_b.weight" in names) == split_kv_b and ("blk.1.attn_kv_b.weight" in names) != split_kv_b
    config, want = gguf_config(file), transformers.AutoConfig.from_pretrained(path)
    differ = {k: (v, getattr(config, k, None)) for k, v in want.to_dict().items()
              if k not in _NOT_MODEL and getattr(config, k, None) != v}
    assert not differ, differ
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    got = gguf_state_dict(file, _meta_model(config))
    assert set(got) == {k for k in hf if ".experts." not in k}
    assert not [k for k in got if not torch.equal(got[k], hf[k])]
    ref = teacher_forced_logits(load_gguf_reference(file), PROMPT)
    torch.testing.assert_close(ref, teacher_forced_logits(load_reference(path, gguf_experts=file), PROMPT),
                               rtol=0, atol=0)


def test_transformers_reads_the_qwen3_moe_file_as_the_same_model(tiny_256, tmp_path):
    """transformers' GGUF reader (which knows llama.cpp's qwen3moe) against ours, on one file."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = tiny_256("qwen3_moe")
    file = write_model_gguf(path, tmp_path / "m.gguf", gate_up="q4_K", down="q6_K", other="q8_0")[0]
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    theirs = load_gguf_checkpoint(str(file), return_tensors=True, model_to_load=hf)
    config = gguf_config(file)
    for field, value in theirs["config"].items():
        if field not in ("model_type", "_model_name_or_path", "rope_theta", "rms_norm_eps"):
            assert getattr(config, field) == value, field
    assert config.rope_parameters["rope_theta"] == theirs["config"]["rope_theta"]
    assert config.rms_norm_eps == pytest.approx(theirs["config"]["rms_norm_eps"], rel=1e-7)
    ours = gguf_state_dict(file, _meta_model(config))
    for layer in (0, 1):
        ours[f"model.layers.{layer}.mlp.experts.gate_up_proj"], ours[f"model.layers.{layer}.mlp.experts.down_proj"] = \
            gguf_expert_weights(file, layer)
    tensors = {k: torch.as_tensor(np.asarray(v)).float() for k, v in theirs["tensors"].items()}
    assert set(tensors) == set(ours)
    assert not [k for k in ours if not torch.equal(ours[k], tensors[k])]


def test_mixtral_q_and_k_rows_are_in_llama_cpp_order(tiny_256, tmp_path):
    """transformers' llama tensor processor un-permutes attn_q / attn_k of our file into the
    checkpoint's q_proj / k_proj (llama.cpp's rotary pairs adjacent)."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    path = tiny_256("mixtral")
    file = write_model_gguf(path, tmp_path / "m.gguf", gate_up="q8_0", down="q8_0")[0]
    cfg = transformers.AutoConfig.from_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    processor = LlamaTensorProcessor(config={"num_attention_heads": cfg.num_attention_heads,
                                             "num_key_value_heads": cfg.num_key_value_heads})
    tensors = {t.name: t for t in gguf.GGUFReader(file).tensors}
    for proj, name in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
        stored = np.array(tensors[f"blk.1.{name}.weight"].data)
        assert not np.array_equal(stored, hf[f"model.layers.1.self_attn.{proj}.weight"].numpy())
        back = processor.process(stored, f"blk.1.{name}.weight").weights
        assert np.array_equal(back, hf[f"model.layers.1.self_attn.{proj}.weight"].numpy()), proj


# (gate/up, down, rest of the model, shards): a Q4_K_M-like split set (q8_0 attention, embeddings),
# one with K-quant attention and embeddings, and an all-float file
CASES = [("q4_K", "q6_K", "q8_0", 2), ("q5_K", "q8_0", "q4_K", 1), ("bf16", "f16", "f32", 1)]


@pytest.mark.parametrize("arch", list(GGUF_ARCHITECTURES))
@pytest.mark.parametrize("gate_up,down,other,shards,split", [(*c, split) for c in CASES for split in ("cpu", "quarter")],
                         ids=[f"{g}-{d}-{o}-x{n}-{split}" for g, d, o, n in CASES for split in ("cpu", "quarter")])
def test_the_file_runs_as_its_dequantized_model(tiny_256, tmp_path, arch, gate_up, down, other, shards, split):
    """The whole model from the GGUF set alone (config, tensors, experts), against the same set
    dequantized in fp32 (experts too), within the formats' agreement bounds; "quarter": a quarter
    of each layer's experts are GPU experts, gguf's dequantization in torch in both runs."""
    E = ARCHITECTURES[arch].tiny[ARCHITECTURES[arch].experts_field]
    gpu = E // 4 if split == "quarter" else 0
    files = write_model_gguf(tiny_256(arch), tmp_path / "m.gguf", gate_up=gate_up, down=down, other=other,
                             shards=shards)
    assert len(files) == shards
    ref = teacher_forced_logits(load_gguf_reference(files[-1]), PROMPT)
    model = load_gguf_model(files[0], dtype=torch.float32, cpuinfer_threads=1, num_gpu_experts=gpu)
    layers = kt_layers(model)
    assert layers and all(k.wrapper.method == "LLAMAFILE" and k.num_gpu_experts == gpu for k in layers)
    assert all(m.gate_up_proj.numel() == 0 for m in (k for k in model.modules() if hasattr(k, "_kt")))
    agreement = logit_agreement(teacher_forced_logits(model, PROMPT), ref)
    print(f"{arch} {gate_up}/{down}/{other} x{shards} gpu {gpu}: {agreement}")
    assert agreement.within(format_agreement_bounds(gate_up, down)), agreement


def test_a_wrong_expert_is_caught(tiny_256, tmp_path):
    """The comparison can fail: a reference whose layer-1 experts are shifted by one disagrees."""
    file = write_model_gguf(tiny_256("qwen3_moe"), tmp_path / "m.gguf", gate_up="q8_0", down="q8_0")[0]
    ref = load_gguf_reference(file)
    experts = next(m for m in ref.modules() if hasattr(m, "gate_up_proj") and m.gate_up_proj.dim() == 3)
    with torch.no_grad():
        experts.gate_up_proj.copy_(experts.gate_up_proj.roll(1, dims=0))
    model = load_gguf_model(file, dtype=torch.float32, cpuinfer_threads=1)
    agreement = logit_agreement(teacher_forced_logits(model, PROMPT), teacher_forced_logits(ref, PROMPT))
    assert not agreement.within(format_agreement_bounds("q8_0", "q8_0")), agreement


# ---- bad files ---------------------------------------------------------------------------------

def _rewrite(src, dst, drop=(), metadata=None):
    """A copy of the GGUF file ``src`` at ``dst`` without the tensors in ``drop`` and with the
    scalar ``metadata`` {key: value or None (dropped)} changed."""
    reader = gguf.GGUFReader(src)
    metadata = metadata or {}
    arch = metadata.get("general.architecture") or reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in metadata:
            continue
        writer.add_key_value(key, field.contents(), field.types[0],
                             sub_type=field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
    for key, value in metadata.items():
        if value is not None and key != "general.architecture":
            writer.add_key_value(key, value, gguf.GGUFValueType.UINT32 if isinstance(value, int)
                                 else gguf.GGUFValueType.STRING)
    for t in reader.tensors:
        if t.name not in drop:
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def deepseek_file(tiny_256, tmp_path_factory):
    return write_model_gguf(tiny_256("deepseek_v3"), tmp_path_factory.mktemp("ds") / "m.gguf",
                            gate_up="q8_0", down="q8_0")[0]


def test_an_experts_only_file_is_no_whole_model(tiny_256, tmp_path):
    file = write_experts_gguf(tiny_256("qwen3_moe"), tmp_path / "experts.gguf", gate_up="q8_0", down="q8_0")[0]
    with pytest.raises(CheckpointError, match=r"experts\.gguf holds no token_embd\.weight: a file of experts only"):
        load_gguf_model(file)


@pytest.mark.parametrize("drop,named", [
    ("blk.1.attn_q_b.weight", r"m\.gguf: tensor blk\.1\.attn_q_b\.weight is missing \(transformers' "
                              r"model\.layers\.1\.self_attn\.q_b_proj\.weight\)"),
    ("blk.2.attn_k_b.weight", r"m\.gguf has neither blk\.2\.attn_kv_b\.weight nor blk\.2\.attn_k_b\.weight"),
    ("blk.1.ffn_up_exps.weight", r"has no tensor blk\.1\.ffn_up_exps\.weight, the routed experts of layer 1"),
])
def test_a_missing_tensor_is_named(deepseek_file, tmp_path, drop, named):
    bad = _rewrite(deepseek_file, tmp_path / "m.gguf", drop=(drop,))
    with pytest.raises((CheckpointError, ValueError), match=named):
        load_gguf_model(bad, cpuinfer_threads=1)


def test_a_tensor_disagreeing_with_the_metadata_is_named(deepseek_file, tmp_path):
    bad = _rewrite(deepseek_file, tmp_path / "m.gguf", metadata={"deepseek2.attention.q_lora_rank": 32})
    with pytest.raises(CheckpointError, match=r"m\.gguf: tensor blk\.0\.attn_q_a\.weight has shape \(64, 256\), but "
                                              r"the metadata makes transformers' "
                                              r"model\.layers\.0\.self_attn\.q_a_proj\.weight \(32, 256\)"):
        load_gguf_model(bad, cpuinfer_threads=1)


@pytest.mark.parametrize("key,value,error,named", [
    ("deepseek2.attention.kv_lora_rank", None, CheckpointError, r"metadata deepseek2\.attention\.kv_lora_rank is missing"),
    ("deepseek2.expert_gating_func", 1, UnsupportedModelError,
     r"metadata deepseek2\.expert_gating_func is 1; the DeepSeek-V3 model scores experts with a sigmoid"),
    ("deepseek2.rope.scaling.type", "yarn", UnsupportedModelError, r"rope\.scaling\.type is 'yarn'"),
    ("general.architecture", "gpt2", GGUFError, r"metadata gpt2\.expert_count is missing"),
])
def test_metadata_the_model_cannot_take_is_named(deepseek_file, tmp_path, key, value, error, named):
    bad = _rewrite(deepseek_file, tmp_path / "m.gguf", metadata={key: value})
    with pytest.raises(error, match=named):
        load_gguf_model(bad, cpuinfer_threads=1)


def test_other_methods_are_refused(deepseek_file):
    with pytest.raises(ValueError, match="experts run as they are stored, with method 'LLAMAFILE'"):
        load_gguf_model(deepseek_file, "AMXINT4")
