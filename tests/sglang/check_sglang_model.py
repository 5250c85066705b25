"""SGLang 0.5.23's own Qwen3-MoE model class with KT enabled by its server arguments, on this CPU,
against transformers in fp32.

Runs only inside the SGLang virtual environment (tests/sglang/setup_env.sh), driven by
tests/test_sglang.py in a process of its own (it initializes torch.distributed). The model is
SGLang's ``Qwen3MoeForCausalLM`` built from ``--model-path`` (the tiny checkpoint of
kt_kernel.models), loaded by its own ``load_weights``, its routed experts split between SGLang's
"GPU" experts (SGLang's torch MoE, shim 5 of sglang_harness) and kt_kernel (``--kt-weight-path``,
quantized at load). What SGLang's ModelRunner would hand the model is built from SGLang's own
classes (sglang_harness.model_forward); the shims are listed in sglang_harness.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
with warnings.catch_warnings():  # SGLang warns at import about its CUDA-only quantizations
    warnings.simplefilter("ignore")
    import sglang_harness

    sglang_harness.install_shims()
    sglang_harness.install_model_shims()
    import sglang  # noqa: F401

from kt_kernel.models import build_tiny_model

TOKENS = 40
CHUNK = 16  # < TOKENS: kt_kernel runs the prefill in chunks
# SGLang runs bf16 end to end (activations, attention, norms) against transformers in fp32. Measured
# logits error (relative L2 / mean KL / top-1), 40 tokens: BF16 0.0046 / 9.5e-5 / 1.0 with every expert
# on kt_kernel, 0.012 / 1.5e-3 / 1.0 with 8 on SGLang's torch MoE; AMXINT8 0.0061 / 1.5e-4 / 1.0;
# AMXINT4 0.026 / 2.8e-3 / 0.925. Bounds: about twice those.
BOUNDS = {"BF16": (0.03, 4e-3), "AMXINT8": (0.02, 1e-3), "AMXINT4": (0.06, 8e-3)}


@pytest.fixture(scope="module")
def checkpoint():
    return build_tiny_model("qwen3_moe")


@pytest.fixture(scope="module")
def transformers_logits(checkpoint):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (TOKENS,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return ids, model(ids[None]).logits[0].float()


@pytest.mark.parametrize("method, num_gpu_experts", [("BF16", 0), ("BF16", 8), ("AMXINT8", 8), ("AMXINT4", 8)])
def test_sglang_qwen3_moe_with_kt_matches_transformers(checkpoint, transformers_logits, method, num_gpu_experts):
    ids, ref = transformers_logits
    model, hf_config = sglang_harness.sglang_model(checkpoint, method, num_gpu_experts, chunked_prefill_size=CHUNK)
    kt_layers = [m for m in model.modules() if type(getattr(m, "quant_method", None)).__name__ == "KTEPWrapperMethod"]
    assert len(kt_layers) == hf_config.num_hidden_layers  # every MoE layer has its experts on kt_kernel
    hidden, last_logits = sglang_harness.model_forward(model, hf_config, ids)
    logits = (hidden.float() @ model.lm_head.weight.float().t())[:, :hf_config.vocab_size]
    rel = ((logits - ref).norm() / ref.norm()).item()
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1).mean().item()
    top1 = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{method} gpu{num_gpu_experts}: logits rel {rel:.4f}, KL {kl:.2e}, top-1 {top1:.3f}")
    max_rel, max_kl = BOUNDS[method]
    assert rel < max_rel and kl < max_kl, f"{method}: logits rel {rel:.4f} (bound {max_rel}), KL {kl:.2e} ({max_kl})"
    # SGLang's LogitsProcessor gives the last position's logits from the same hidden states
    torch.testing.assert_close(last_logits.float()[:hf_config.vocab_size], logits[-1], rtol=2e-2, atol=2e-2)
