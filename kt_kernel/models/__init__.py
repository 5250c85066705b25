"""Whole MoE models on kt_kernel: the supported architectures, tiny test models, checkpoint checks,
comparison with a reference.

Needs the optional dependency transformers (``pip install kt_kernel[models]``); importing this
package does not, the functions that use it import it.

    from kt_kernel.models import build_tiny_model
    from kt_kernel.integrations.transformers import load_model, load_reference

    path = build_tiny_model("deepseek_v3")              # HF layout, in ~/.cache/kt_kernel
    model = load_model(path, "AMXINT4", num_gpu_experts=16)
"""
from __future__ import annotations

from kt_kernel.models.architectures import ARCHITECTURES, Architecture, architecture
from kt_kernel.models.checkpoint import CheckpointInfo, inspect_checkpoint
from kt_kernel.models.compare import (AGREEMENT_BOUNDS, Agreement, Bounds, Generation, GreedyCheck, check_greedy,
                                      generate_greedy, logit_agreement, teacher_forced_logits)
from kt_kernel.models.errors import CheckpointError, UnsupportedModelError
from kt_kernel.models.tiny import build_tiny_model, default_cache_dir, init_random_weights, tiny_config
from kt_kernel.models.tokenizer import PrintableTokenizer, load_tokenizer

__all__ = ["ARCHITECTURES", "Architecture", "architecture", "CheckpointInfo", "inspect_checkpoint",
           "CheckpointError", "UnsupportedModelError", "build_tiny_model", "tiny_config", "init_random_weights",
           "default_cache_dir", "PrintableTokenizer", "load_tokenizer", "AGREEMENT_BOUNDS", "Agreement", "Bounds",
           "Generation", "GreedyCheck", "check_greedy", "generate_greedy", "logit_agreement",
           "teacher_forced_logits"]
