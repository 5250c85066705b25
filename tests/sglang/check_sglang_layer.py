"""SGLang 0.5.23's real FusedMoE with KT enabled by its server arguments, against a plain torch MoE.

Runs only inside the SGLang virtual environment (tests/sglang/setup_env.sh), driven by
tests/test_sglang.py; the file name keeps the main suite from collecting it. The shims, each
justified, are in sglang_harness.py; the stream value reaching kt_kernel is SGLang's own.

Every case: Qwen3-MoE's tiny checkpoint (kt_kernel.models) as --model-path and --kt-weight-path
(quantized at load), SGLang's TopK routing to physical slots with 4 redundant slots
(--ep-num-redundant-experts, --init-expert-location with a physical_to_logical_map that repeats
logical experts), 40 tokens against --chunked-prefill-size 16, and SGLang's in-place
``topk_ids[topk_ids >= num_gpu_experts] = -1`` right after submit_forward.
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
    import sglang  # noqa: F401  (its import-time warnings stay inside this block)
    from sglang.srt.layers.moe.fused_moe_triton import layer as _fused_moe_layer  # noqa: F401

import kt_kernel
from kt_kernel.models import build_tiny_model

REDUNDANT = 4
CHUNK = 16
TOKENS = 40  # > CHUNK: kt_kernel runs it in chunks


def physical_to_logical(num_layers: int, num_logical: int):
    """Identity, then redundant slots repeating logical experts (a different set per layer)."""
    return [list(range(num_logical)) + [(3 + 7 * r + 5 * layer) % num_logical for r in range(REDUNDANT)]
            for layer in range(num_layers)]


@pytest.fixture(scope="module")
def checkpoint():
    from safetensors.torch import load_file

    path = build_tiny_model("qwen3_moe")
    tensors = {}
    for f in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return path, tensors


def reference(x, physical_ids, weights, pmap_row, tensors, layer_id):
    """fp64 MoE on the checkpoint's weights: sum_k w * down(silu(gate x) * up x) of the logical
    expert behind each physical slot."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    xd = x.double()
    for t in range(x.shape[0]):
        for k in range(physical_ids.shape[1]):
            e = pmap_row[int(physical_ids[t, k])]
            w = {p: tensors[f"model.layers.{layer_id}.mlp.experts.{e}.{p}_proj.weight"].double()
                 for p in ("gate", "up", "down")}
            h = torch.nn.functional.silu(w["gate"] @ xd[t]) * (w["up"] @ xd[t])
            out[t] += float(weights[t, k]) * (w["down"] @ h)
    return out


def route(topk, hf_config, tensors, layer_id, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(TOKENS, hf_config.hidden_size, generator=g).bfloat16()
    logits = x.float() @ tensors[f"model.layers.{layer_id}.mlp.gate.weight"].float().t()
    return x, topk(x, logits)


def run_layer(layer, topk, hf_config, tensors, layer_id, seed, num_gpu_experts, ids_dtype=torch.int64):
    """SGLang's forward of ``layer`` on routed tokens. ``ids_dtype``: SGLang's TopK gives int64
    ids on this CPU and int32 from its CUDA kernels; the ids are cast before SGLang's layer takes
    them, and the dtype reaching kt_kernel is checked."""
    x, topk_output = route(topk, hf_config, tensors, layer_id, seed)
    topk_output = topk_output._replace(topk_ids=topk_output.topk_ids.to(ids_dtype))
    ids = topk_output.topk_ids.clone()
    weights = topk_output.topk_weights.clone()
    seen = []
    submit = kt_kernel.KTMoEWrapper.submit_forward

    def recording_submit(self, hidden_states, topk_ids, *args):
        seen.append(topk_ids.dtype)
        return submit(self, hidden_states, topk_ids, *args)

    kt_kernel.KTMoEWrapper.submit_forward = recording_submit
    try:
        out = layer(x, topk_output)
    finally:
        kt_kernel.KTMoEWrapper.submit_forward = submit
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    if num_gpu_experts < 32 + REDUNDANT:
        assert seen == [ids_dtype], f"kt_kernel was handed topk_ids of {seen}, expected [{ids_dtype}]"
    # SGLang masked the CPU slots in the very tensor kt_kernel was handed
    assert torch.equal(topk_output.topk_ids, ids.masked_fill(ids >= num_gpu_experts, -1))
    return x, ids, weights, out


def test_capture_batch_sizes_set_as_sglang_does():
    """SGLang's decode CUDA-graph runner calls it on the class before capture."""
    from kt_kernel import KTMoEWrapper

    before = KTMoEWrapper.get_capture_batch_sizes()
    try:
        KTMoEWrapper.set_capture_batch_sizes([1, 2, 4, 8, 16])
        assert KTMoEWrapper.get_capture_batch_sizes() == [1, 2, 4, 8, 16]
    finally:
        KTMoEWrapper.set_capture_batch_sizes(before)


@pytest.mark.parametrize("ids_dtype", [torch.int64, torch.int32], ids=["ids64", "ids32"])
@pytest.mark.parametrize("num_gpu_experts", [0, 8, 32 + REDUNDANT], ids=["gpu0", "gpu8", "gpu_all"])
@pytest.mark.parametrize("method", list(kt_kernel.METHODS))
def test_fused_moe_with_kt_matches_torch(moe, checkpoint, method, num_gpu_experts, ids_dtype):
    path, tensors = checkpoint
    pmap = physical_to_logical(2, 32)
    _, hf_config = sglang_harness.server_args(path, method, num_gpu_experts, deferred=0, chunked_prefill_size=CHUNK,
                                              physical_to_logical_map=pmap, redundant=REDUNDANT)
    layer, topk = sglang_harness.moe_layer(hf_config, 0, REDUNDANT, tensors)
    assert type(layer.quant_method).__name__ == "KTEPWrapperMethod"
    x, ids, weights, out = run_layer(layer, topk, hf_config, tensors, 0, seed=1, num_gpu_experts=num_gpu_experts,
                                     ids_dtype=ids_dtype)
    assert bool((ids >= 32).any()), "the routing reached no redundant slot; pick another seed"
    if 0 < num_gpu_experts < 32:
        assert bool((ids < num_gpu_experts).any()) and bool((ids >= num_gpu_experts).any())
    ref = reference(x, ids, weights, pmap[0], tensors, 0)
    moe.assert_close_fp32(out, ref, moe.format_of(method)["name"], f"SGLang FusedMoE + kt_kernel {method}")


@pytest.mark.parametrize("method", ["AMXINT8"])
def test_deferred_experts_reach_the_next_layer(moe, checkpoint, method):
    """--kt-max-deferred-experts-per-token 1: SGLang passes 1 to layer 0 and 0 to the last layer
    (1); what layer 0 defers is added to layer 1's output, so the two outputs sum to the two
    references' sum."""
    path, tensors = checkpoint
    pmap = physical_to_logical(2, 32)
    _, hf_config = sglang_harness.server_args(path, method, 8, deferred=1, chunked_prefill_size=CHUNK,
                                              physical_to_logical_map=pmap, redundant=REDUNDANT)
    layers = [sglang_harness.moe_layer(hf_config, i, REDUNDANT, tensors) for i in range(2)]
    fmt_name = moe.format_of(method)["name"]
    total_out = torch.zeros(TOKENS, hf_config.hidden_size, dtype=torch.float64)
    total_ref = torch.zeros_like(total_out)
    for i, (layer, topk) in enumerate(layers):
        x, ids, weights, out = run_layer(layer, topk, hf_config, tensors, i, seed=1, num_gpu_experts=8)
        ref = reference(x, ids, weights, pmap[i], tensors, i)
        if i == 0:  # an expert per token is missing from layer 0's own output
            missing = (out.double() - ref).norm() / ref.norm()
            assert missing > moe.tolerance(fmt_name).fp32_rel, f"layer 0 deferred nothing ({missing:.4f})"
        total_out += out.double()
        total_ref += ref
    moe.assert_close_fp32(total_out, total_ref, fmt_name, "two layers with deferred experts")
