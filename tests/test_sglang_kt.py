"""The names the KT fork of SGLang (sglang-kt 0.7.2) imports and the keywords it constructs
KTMoEWrapper with (its kt_ep_wrapper.py, inference path), tested directly: sglang-kt itself is not
installed here (its wheel needs its own sgl_kernel payload and a CUDA torch)."""
from __future__ import annotations

import pytest
import torch

import reference


def test_sglang_kt_imports_both_names():
    from kt_kernel import KTMoEWrapper, generate_gpu_experts_masks  # noqa: F401  (sglang-kt's import line)


def _chosen_are_the_most_active(freq: torch.Tensor, mask: torch.Tensor) -> bool:
    chosen, rest = freq[mask], freq[~mask]
    return chosen.numel() == 0 or rest.numel() == 0 or bool(chosen.min() >= rest.max())


@pytest.mark.parametrize("n", [0, 1, 7, 24, 32])
def test_masks_pick_the_globally_most_active_experts(n):
    from kt_kernel import generate_gpu_experts_masks

    freq = torch.rand(4, 8, generator=torch.Generator().manual_seed(n))
    freq[0] *= 10  # a hot layer: the count is global, so it takes more than its share
    mask = generate_gpu_experts_masks(freq, n)
    assert mask.dtype == torch.bool and mask.device.type == "cpu" and mask.shape == (4, 8)
    assert int(mask.sum()) == n
    assert _chosen_are_the_most_active(freq, mask)
    mask[0].copy_(torch.ones(8, dtype=torch.bool))  # writable: sglang-kt edits the masks in place
    assert bool(mask[0].all())


def test_masks_break_ties_by_position():
    from kt_kernel import generate_gpu_experts_masks

    mask = generate_gpu_experts_masks(torch.ones(2, 3), 4)
    assert mask.tolist() == [[True, True, True], [True, False, False]]


@pytest.mark.parametrize("freq, n, error, words", [
    ([1.0, 2.0], 1, ValueError, "activation_freq has shape"),
    (torch.ones(2, 2, dtype=torch.bool), 1, TypeError, "activation_freq has dtype"),
    (torch.ones(2, 2), 5, ValueError, "num_gpu_experts_total=5"),
    (torch.ones(2, 2), -1, ValueError, "num_gpu_experts_total=-1"),
    (torch.full((2, 2), float("nan")), 1, ValueError, "NaN"),
])
def test_mask_arguments_are_checked(freq, n, error, words):
    from kt_kernel import generate_gpu_experts_masks

    if isinstance(freq, list):
        freq = torch.tensor(freq)
    with pytest.raises(error, match=words):
        generate_gpu_experts_masks(freq, n)


E, K, H, I = 8, 2, 64, 32


def _sglang_kt_wrapper(mask, **extra):
    from kt_kernel import KTMoEWrapper

    # the keyword set of sglang-kt's inference path; no num_gpu_experts
    kwargs = dict(layer_idx=0, num_experts=E, num_experts_per_tok=K, hidden_size=H, moe_intermediate_size=I,
                  gpu_experts_mask=mask, cpuinfer_threads=2, threadpool_count=2, numa_nodes=None, weight_path=None,
                  chunked_prefill_size=16, swiglu_limit=0.0, swiglu_alpha=0.0, method="BF16",
                  max_deferred_experts_per_token=0)
    kwargs.update(extra)
    return KTMoEWrapper(**kwargs)


def test_sglang_kt_keywords_run_the_cpu_experts_of_the_mask(moe):
    g = torch.Generator().manual_seed(3)
    gate, up = torch.randn(E, I, H, generator=g) / H**0.5, torch.randn(E, I, H, generator=g) / H**0.5
    down = torch.randn(E, H, I, generator=g) / I**0.5
    mask = torch.tensor([True, False, False, True, False, True, False, False])
    w = _sglang_kt_wrapper(mask)
    assert w.gpu_experts_mask.tolist() == mask.tolist()
    w.load_weights_from_tensors(gate, up, down)
    x = torch.randn(20, H, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(20)])
    weights = torch.rand(20, K, generator=g)
    out = w.forward(x, ids, weights)
    ref = reference.moe_forward(x, ids, weights, gate, up, down, gpu_mask=mask.tolist())
    moe.assert_close_fp32(out, ref, "bf16", "sglang-kt keyword set")


@pytest.mark.parametrize("name", ["swiglu_limit", "swiglu_alpha"])
def test_clamped_swiglu_is_refused_by_name(name):
    with pytest.raises(NotImplementedError, match=f"{name}=7.0.*swiglu_limit=0.0 and swiglu_alpha=0.0"):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), **{name: 7.0})


def test_amxbf16_is_bf16():
    assert _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), method="AMXBF16").method == "BF16"


@pytest.mark.parametrize("method", ["AMXFP8", "MXFP8"])
def test_fp8_methods_are_refused_by_name(method):
    with pytest.raises(NotImplementedError, match=f"method '{method}'.*BF16 \\(also AMXBF16\\), AMXINT8, AMXINT4"):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), method=method)


@pytest.mark.parametrize("sft_keyword", [{"mode": "sft"}, {"lora_rank": 8}])
def test_sft_keywords_stay_unknown(sft_keyword):
    """sglang-kt builds SFT wrappers only for expert LoRA, after probing kt_kernel.sft (absent)."""
    with pytest.raises(TypeError, match=next(iter(sft_keyword))):
        _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool), **sft_keyword)
    with pytest.raises(ImportError):
        import kt_kernel.sft  # noqa: F401


def _tiny_layer_weights(path, layer_id, num_experts):
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    stack = lambda p: torch.stack([tensors[f"model.layers.{layer_id}.mlp.experts.{e}.{p}_proj.weight"].float()
                                   for e in range(num_experts)])
    return stack("gate"), stack("up"), stack("down")


def test_mask_edited_in_place_takes_effect_at_the_next_forward(moe):
    """sglang-kt's dynamic placement: ``wrapper.gpu_experts_mask.copy_(new)`` between forwards;
    experts newly on the CPU are read from weight_path (here an HF checkpoint, quantized at load)."""
    from kt_kernel import KTMoEWrapper
    from kt_kernel.models import build_tiny_model, tiny_config

    path = build_tiny_model("qwen3_moe")
    cfg = tiny_config("qwen3_moe")
    E_, K_, H_, I_ = cfg.num_experts, cfg.num_experts_per_tok, cfg.hidden_size, cfg.moe_intermediate_size
    first = torch.zeros(E_, dtype=torch.bool)
    first[:E_ // 2] = True
    w = KTMoEWrapper(layer_idx=1, num_experts=E_, num_experts_per_tok=K_, hidden_size=H_, moe_intermediate_size=I_,
                     gpu_experts_mask=first.clone(), cpuinfer_threads=2, threadpool_count=2, numa_nodes=None,
                     weight_path=str(path), chunked_prefill_size=16, swiglu_limit=0.0, swiglu_alpha=0.0,
                     method="BF16", max_deferred_experts_per_token=0)
    w.load_weights(torch.arange(E_))
    gate, up, down = _tiny_layer_weights(path, 1, E_)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, H_, generator=g).bfloat16()
    ids = torch.stack([torch.randperm(E_, generator=g)[:K_] for _ in range(24)])
    weights = torch.rand(24, K_, generator=g)
    for mask in (first, ~first, torch.arange(E_) % 3 == 0):
        w.gpu_experts_mask.copy_(mask)
        out = w.forward(x, ids, weights)
        ref = reference.moe_forward(x, ids, weights, gate, up, down, gpu_mask=mask.tolist())
        moe.assert_close_fp32(out, ref, "bf16", f"after moving to {mask.int().tolist()}")
        assert w.num_gpu_experts == int(mask.sum())


def test_mask_edit_without_weight_path_says_how_to_reload():
    w = _sglang_kt_wrapper(torch.zeros(E, dtype=torch.bool))
    g = torch.Generator().manual_seed(1)
    w.load_weights_from_tensors(torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g),
                                torch.randn(E, H, I, generator=g))
    w.gpu_experts_mask[2] = True
    x = torch.randn(4, H, generator=g).bfloat16()
    with pytest.raises(RuntimeError, match=r"gpu_experts_mask changed \(slots \[2\]\).*load_weights"):
        w.forward(x, torch.zeros(4, K, dtype=torch.int64) + torch.arange(K), torch.ones(4, K))
