"""Tiny MoE causal language models of the real architectures, with random seeded weights.

``build_tiny_model("deepseek_v3")`` makes the transformers model of the row's tiny config
(kt_kernel.models.architectures), draws its weights from a seeded generator and saves it in the
Hugging Face layout: config.json plus model.safetensors holding the per-expert keys the real
checkpoints use (``model.layers.1.mlp.experts.7.up_proj.weight``, Mixtral's ``w1/w3/w2``), so
that loading it runs the same conversion code as a real checkpoint. The folder lives in a cache
(``$KT_KERNEL_CACHE``, default ``~/.cache/kt_kernel``) keyed by the configuration and the seed,
and is reused once built.

Random weights at transformers' default scale (normal(0, 0.02)) leave the experts' output tiny
next to the residual stream, so a wrong expert would hardly move the logits. Here every matrix is
drawn at the scale that keeps activations O(1): normal(0, 1/fan_in) for linear layers and
experts, normal(0, 1) for embeddings; the experts' down projections are scaled by EXPERT_SCALE
(divided by DeepSeek's routed_scaling_factor), so that the routed experts add about half as much
to the residual stream as attention does. That keeps a routing flip, or a quantized method's
error, from swamping everything else (with the experts at full scale, int4 weights moved the
top-2 logit gap by about 0.5-0.8 rms against a median gap of 0.8-1.5, and a greedy comparison
was all near-ties), while a wrong or missing expert still moves the logits by far more than any
method's error. Routers get logits of standard deviation ROUTER_SCALE (decisive but not one-hot
routing), the LM head logits of standard deviation LOGIT_SCALE (a peaked next-token distribution,
so that top-1 is meaningful), DeepSeek's score-correction bias and gpt-oss's router bias normal(0, SCORE_BIAS_STD), gpt-oss's
expert biases normal(0, EXPERT_BIAS_STD) (the down bias times the experts' scale), its attention
sinks normal(0, SINK_STD) from a generator of their own. Norm
weights stay 1. The weights are saved in bf16, as real checkpoints are: the fp32 reference
computes with exactly the weights kt_kernel's BF16 method holds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from kt_kernel.models._deps import require_transformers
from kt_kernel.models.architectures import architecture
from kt_kernel.models.tokenizer import TINY_MARKER

__all__ = ["build_tiny_model", "tiny_config", "init_random_weights", "default_cache_dir"]

INIT_VERSION = 4  # bump when the weights drawn for a (config, seed) change: invalidates caches
SINK_STD = 0.02  # transformers' initializer_range: the scale the tests' bounds were set with
SINK_SEED_OFFSET = 1 << 20
EXPERT_SCALE = 0.5
ROUTER_SCALE = 1.5
LOGIT_SCALE = 4.0
SCORE_BIAS_STD = 0.05
EXPERT_BIAS_STD = 0.5  # gpt-oss's expert biases: of the order of the products they are added to


def default_cache_dir() -> Path:
    if os.environ.get("KT_KERNEL_CACHE"):
        return Path(os.environ["KT_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kt_kernel"


def tiny_config(arch: str, **overrides):
    """The transformers config of ``arch``'s tiny model, with ``overrides`` applied."""
    transformers = require_transformers()
    row = architecture(arch)
    return getattr(transformers, row.config_class)(**{**row.tiny, **overrides})


@torch.no_grad()
def init_random_weights(model, seed: int = 0) -> None:
    """Draws every weight of ``model`` from a generator seeded with ``seed`` (see the module
    docstring for the scales). The same model class, config and seed give the same weights."""
    g = torch.Generator().manual_seed(seed)

    drawn, sinks = set(), []

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32).mul_(std))
        drawn.add(id(t))

    lm_head = model.get_output_embeddings()
    expert_out = EXPERT_SCALE / getattr(model.config, "routed_scaling_factor", 1.0)
    for module in model.modules():
        if hasattr(module, "gate_up_proj") and hasattr(module, "down_proj"):  # fused routed experts
            k = -2 if getattr(module, "is_transposed", False) else -1  # gpt-oss: [E, H, 2I], [E, I, H]
            normal_(module.gate_up_proj, module.gate_up_proj.shape[k] ** -0.5)             # [E, 2I, H]
            normal_(module.down_proj, expert_out * module.down_proj.shape[k] ** -0.5)      # [E, H, I]
            if getattr(module, "gate_up_proj_bias", None) is not None:  # gpt-oss's expert biases
                normal_(module.gate_up_proj_bias, EXPERT_BIAS_STD)
                normal_(module.down_proj_bias, EXPERT_BIAS_STD * expert_out)
        elif "Router" in type(module).__name__:
            normal_(module.weight, ROUTER_SCALE * module.weight.shape[-1] ** -0.5)
            if getattr(module, "e_score_correction_bias", None) is not None:
                normal_(module.e_score_correction_bias, SCORE_BIAS_STD)
            if isinstance(getattr(module, "bias", None), torch.Tensor):  # gpt-oss's router bias
                normal_(module.bias, SCORE_BIAS_STD)
        elif isinstance(module, torch.nn.Linear):
            scale = LOGIT_SCALE if module is lm_head else 1.0
            normal_(module.weight, scale * module.in_features ** -0.5)
            if module.bias is not None:
                module.bias.zero_()
                drawn.add(id(module.bias))
        elif isinstance(module, torch.nn.Embedding):
            normal_(module.weight, 1.0)
        if isinstance(getattr(module, "sinks", None), torch.Tensor):  # gpt-oss's attention sinks (logits per head)
            sinks.append(module.sinks)
    # the sinks from a generator of their own, after the rest: every other weight is what it was
    # before they were drawn here (transformers drew them from the global generator)
    g = torch.Generator().manual_seed(seed + SINK_SEED_OFFSET)
    for t in sinks:
        normal_(t, SINK_STD)
    # every other tensor is a norm's weight (transformers' ones); anything else would be transformers'
    # own draw from the global generator, different at every build
    left = [n for n, t in model.named_parameters() if id(t) not in drawn and "norm" not in n.rsplit(".", 1)[0]]
    if left:
        raise RuntimeError(f"init_random_weights does not draw {left[0]}: add a rule for it")


def _folder_name(arch: str, config, seed: int) -> str:
    desc = json.dumps({"config": config.to_diff_dict(), "seed": seed, "init": INIT_VERSION}, sort_keys=True,
                      default=str)
    return f"{arch}-tiny-s{seed}-{hashlib.sha256(desc.encode()).hexdigest()[:10]}"


def build_tiny_model(arch: str = "qwen3_moe", path=None, *, seed: int = 0, cache_dir=None, **overrides) -> Path:
    """Builds (or finds already built) the tiny ``arch`` model and returns its folder.

    ``path``: where to save it (default: a folder named by the config and seed in ``cache_dir``,
    default :func:`default_cache_dir`). ``overrides``: config fields to change from the row's
    tiny config. A folder that already holds the finished model is reused as it is."""
    transformers = require_transformers()
    row = architecture(arch)
    config = tiny_config(arch, **overrides)
    if path is None:
        path = Path(cache_dir or default_cache_dir()) / "models" / _folder_name(arch, config, seed)
    path = Path(path)
    if (path / TINY_MARKER).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model = getattr(transformers, row.model_class)(config)  # its norms (ones) stay as transformers made them
        init_random_weights(model, seed)
        model.to(torch.bfloat16).save_pretrained(str(tmp))  # bf16, as the real checkpoints
        (tmp / TINY_MARKER).write_text(json.dumps(
            {"arch": arch, "seed": seed, "init_version": INIT_VERSION, "tokenizer": "printable-ascii",
             "overrides": overrides}, indent=1, default=str))
        try:
            os.replace(tmp, path)  # atomic; fails if another process finished first
        except OSError:
            if not (path / TINY_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
