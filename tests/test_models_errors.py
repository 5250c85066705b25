"""Bad checkpoints and models: each a clear error naming the key or the config field, raised before
anything runs; never a crash, never a silent fallback to transformers' eager experts."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from kt_kernel.integrations.transformers import attach, load_model  # noqa: E402
from kt_kernel.models import ARCHITECTURES, CheckpointError, UnsupportedModelError  # noqa: E402

ARCHS = list(ARCHITECTURES)



def _copy(src, dst, config=None, drop=(), change=None):
    """A copy of the checkpoint in ``src`` with config.json fields updated, tensors dropped, or
    tensors replaced (``change``: key -> tensor)."""
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    if drop or change:
        tensors = load_file(dst / "model.safetensors")
        for key in drop:
            del tensors[key]
        tensors.update(change or {})
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _raises(exc, path, *fragments):
    """load_model must raise ``exc`` whose message holds every fragment; returns the message."""
    with pytest.raises(exc) as info:
        load_model(path, "BF16", cpuinfer_threads=2)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} missing from the error message: {msg}"
    return msg


# ---- the checkpoint disagrees with its config.json ------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_expert_intermediate_size_disagrees(tiny, tmp_path, arch):
    row = ARCHITECTURES[arch]
    path = _copy(tiny(arch), tmp_path / "m", config={row.intermediate_field: 64})
    first_moe_layer = 1 if arch == "deepseek_v3" else 0
    _raises(CheckpointError, path, f"{row.intermediate_field}=64", _expert_key(row, first_moe_layer, 0, 0))


def _expert_key(row, layer, expert, proj):
    """The checkpoint key of an expert's projection: its own tensor, or gpt-oss's fused one."""
    if row.expert_layout == "gpt_oss":
        return list(row.fused_expert_shapes(layer, 1, 1, 1))[0 if proj < 2 else 2]
    return row.expert_key(layer, expert, proj)


def test_more_experts_in_the_checkpoint_than_in_config(tiny, tmp_path):
    path = _copy(tiny("deepseek_v3"), tmp_path / "m", config={"n_routed_experts": 16})
    _raises(CheckpointError, path, "n_routed_experts=16", "expert 16 in layer 1")


def test_hidden_size_disagrees(tiny, tmp_path):
    path = _copy(tiny("mixtral"), tmp_path / "m", config={"hidden_size": 512})
    _raises(CheckpointError, path, "hidden_size=512", "model.layers.0.block_sparse_moe.experts.0.w1.weight")


# ---- tensors missing or of the wrong kind -----------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_missing_expert_tensor(tiny, tmp_path, arch):
    row = ARCHITECTURES[arch]
    key = _expert_key(row, 2 if arch == "deepseek_v3" else 1, 5, 1)   # an up projection
    path = _copy(tiny(arch), tmp_path / "m", drop=[key])
    _raises(CheckpointError, path, key, "missing")


def test_missing_tensor_outside_the_experts(tiny, tmp_path):
    """transformers would re-initialise it at random and go on."""
    key = "model.layers.1.self_attn.kv_b_proj.weight"
    path = _copy(tiny("deepseek_v3"), tmp_path / "m", drop=[key])
    _raises(CheckpointError, path, key)


def test_expert_tensor_in_fp8(tiny, tmp_path):
    key = ARCHITECTURES["qwen3_moe"].expert_key(0, 3, 2)
    t = load_file(tiny("qwen3_moe") / "model.safetensors")[key]
    path = _copy(tiny("qwen3_moe"), tmp_path / "m", change={key: t.to(torch.float8_e4m3fn)})
    _raises(CheckpointError, path, key, "F8_E4M3")


def test_wrong_shape_outside_the_experts(tiny, tmp_path):
    key = "model.layers.0.self_attn.q_proj.weight"
    path = _copy(tiny("qwen3_moe"), tmp_path / "m", change={key: torch.zeros(128, 256, dtype=torch.bfloat16)})
    _raises(CheckpointError, path, key, "(128, 256)")


def test_no_safetensors(tiny, tmp_path):
    path = _copy(tiny("mixtral"), tmp_path / "m")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    _raises(CheckpointError, path, "no .safetensors", "pytorch_model.bin")


def test_not_a_model_folder(tmp_path):
    _raises(CheckpointError, tmp_path, "config.json")


# ---- models kt_kernel does not run ------------------------------------------------------------


def test_dense_model(tmp_path):
    from transformers import Qwen3Config

    Qwen3Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32).save_pretrained(tmp_path)
    _raises(UnsupportedModelError, tmp_path, "not a Mixture-of-Experts model", "'qwen3'")


def test_moe_architecture_without_moe_layers(tiny, tmp_path):
    path = _copy(tiny("qwen3_moe"), tmp_path / "m", config={"mlp_only_layers": [0, 1]})
    _raises(UnsupportedModelError, path, "not a Mixture-of-Experts model", "mlp_only_layers=[0, 1]")


def test_unsupported_moe_architecture(tmp_path):
    from transformers import Qwen2MoeConfig

    Qwen2MoeConfig(vocab_size=96, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                   num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32).save_pretrained(tmp_path)
    _raises(UnsupportedModelError, tmp_path, "'qwen2_moe'", "num_experts=4", "qwen3_moe, deepseek_v3, mixtral")


def test_prequantized_checkpoint(tiny, tmp_path):
    path = _copy(tiny("deepseek_v3"), tmp_path / "m",
                 config={"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})
    _raises(UnsupportedModelError, path, "quantization_config", "'fp8'")


def test_attach_refuses_an_unsupported_model():
    """An MoE architecture without a row (Qwen2-MoE: its shared expert's gate is not modelled)."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    model = Qwen2MoeForCausalLM(Qwen2MoeConfig(vocab_size=96, hidden_size=64, intermediate_size=64,
                                               moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               num_experts=4, num_experts_per_tok=2))
    with pytest.raises(UnsupportedModelError, match="'qwen2_moe' is not a supported"):
        attach(model, "BF16", cpuinfer_threads=2)


def test_attach_refuses_a_model_without_moe_layers():
    from transformers import Qwen3MoeForCausalLM

    from kt_kernel.models import tiny_config

    model = Qwen3MoeForCausalLM(tiny_config("qwen3_moe", mlp_only_layers=[0, 1]))
    with pytest.raises(UnsupportedModelError, match="no routed-experts module"):
        attach(model, "BF16", cpuinfer_threads=2)


def test_from_pretrained_unsupported_architecture_fails_at_first_forward(tmp_path):
    """from_pretrained(experts_implementation="kt_kernel") on an architecture without a row: the
    first forward raises instead of running the experts some other way."""
    from transformers import AutoModelForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    import kt_kernel.integrations.transformers  # noqa: F401

    config = Qwen2MoeConfig(vocab_size=96, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                            shared_expert_intermediate_size=32)
    Qwen2MoeForCausalLM(config).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), experts_implementation="kt_kernel")
    with pytest.raises(UnsupportedModelError, match="'qwen2_moe' is not a supported"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


# ---- options ------------------------------------------------------------------------------------


def test_bad_options(tiny):
    path = tiny("qwen3_moe")
    with pytest.raises(ValueError, match="unknown method 'INT3'"):
        load_model(path, "INT3")
    with pytest.raises(ValueError, match="num_gpu_experts=33 for layer 0 must be an integer in 0..32"):
        load_model(path, "BF16", num_gpu_experts=33, cpuinfer_threads=2)
    with pytest.raises(ValueError, match="mask has 5 entries, expected 32"):
        load_model(path, "BF16", gpu_experts_mask=torch.ones(5, dtype=torch.bool), cpuinfer_threads=2)
    with pytest.raises(ValueError, match="num_gpu_experts names layer 7, which is not an MoE layer"):
        load_model(path, "BF16", num_gpu_experts={0: 4, 7: 4}, cpuinfer_threads=2)


def test_a_bad_option_for_a_later_layer_leaves_the_model_untouched(tiny):
    """attach checks every layer before converting the first one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny("qwen3_moe")), experts_implementation="eager")
    with pytest.raises(ValueError, match="for layer 1 must be an integer in 0..32"):
        attach(model, "BF16", num_gpu_experts={0: 4, 1: 40}, cpuinfer_threads=2)
    assert model.config._experts_implementation == "eager"
    assert all(layer.mlp.experts.gate_up_proj.numel() > 0 and not hasattr(layer.mlp.experts, "_kt")
               for layer in model.model.layers)



@pytest.mark.parametrize("version", ["5.6.2", "6.0.0"])
def test_transformers_outside_the_supported_range(monkeypatch, version):
    import transformers

    from kt_kernel.models._deps import require_transformers

    monkeypatch.setattr(transformers, "__version__", version)
    with pytest.raises(ImportError, match=f"needs transformers >= 5.7, < 6; found {version}"):
        require_transformers()
