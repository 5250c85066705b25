"""The MoE architectures kt_kernel runs through transformers: one row per architecture.

Each row says what a checkpoint of that architecture looks like (its config fields and the
per-expert tensor names real checkpoints use) and gives the tiny configuration that the test
models and the demo use. Adding an architecture whose experts transformers stores in its fused
layout (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``, SiLU-gated, no bias) is adding a row.

The tiny configurations are the smallest that still exercise each feature the real models have:

* ``qwen3_moe``   softmax top-k with renormalised weights (``norm_topk_prob``), 32 experts, top-4.
* ``deepseek_v3`` sigmoid scores plus ``e_score_correction_bias``, group-limited top-k (4 groups,
                  2 kept), a shared expert, ``routed_scaling_factor`` 2.5, multi-head latent
                  attention, a first dense layer (``first_k_dense_replace`` 1); 32 experts, top-4.
* ``mixtral``     softmax top-2 of 8 experts (``w1``/``w3``/``w2`` checkpoint names, the MoE block
                  stored as ``block_sparse_moe``).
* ``gpt_oss``     gpt-oss: softmax over the top-4 of 16 experts' logits (a router bias), experts with
                  biases and the clamped SwiGLU g sigmoid(1.702 g) (u + 1) (``swiglu_limit`` 7),
                  stored fused (``experts.gate_up_proj [E, H, 2I]``, gate and up interleaved), and
                  attention with sinks, biases and a sliding window on every other layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kt_kernel.models.errors import UnsupportedModelError

__all__ = ["Architecture", "ARCHITECTURES", "architecture"]

# hidden 256 and expert intermediate 128 are whole int4_g32 groups along K (32) and whole
# 16-channel panels; vocab 96 is the printable-ASCII tokenizer of kt_kernel.models.tokenizer.
_COMMON = dict(vocab_size=96, hidden_size=256, num_attention_heads=4, max_position_embeddings=1024,
               bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)


@dataclass(frozen=True)
class Architecture:
    model_type: str                   # config.json "model_type"
    label: str                        # what users call it
    model_class: str                  # transformers class of the causal LM
    config_class: str                 # transformers class of its config
    experts_field: str                # config field: routed experts per MoE layer
    intermediate_field: str           # config field: intermediate size of one routed expert
    moe_fields: tuple                 # config fields that decide which layers are MoE
    block: str                        # checkpoint name of the MoE block inside a decoder layer
    expert_proj: tuple                # checkpoint names of one expert's (gate, up, down) projections
    routing: str                      # one line for reports
    tiny: dict = field(default_factory=dict)
    # the checkpoints' experts: "per_expert" (experts.{e}.{proj}.weight) or "gpt_oss" (fused
    # experts.gate_up_proj [E, H, 2I] interleaved, down_proj [E, I, H], and their biases)
    expert_layout: str = "per_expert"

    def expert_key(self, layer: int, expert: int, proj: int) -> str:
        """Checkpoint key of projection ``proj`` (0 gate, 1 up, 2 down) of one expert."""
        return f"model.layers.{layer}.{self.block}.experts.{expert}.{self.expert_proj[proj]}.weight"

    def fused_expert_shapes(self, layer: int, E: int, H: int, I: int) -> dict:
        """gpt_oss layout: checkpoint key -> shape of the layer's fused expert tensors."""
        prefix = f"model.layers.{layer}.{self.block}.experts"
        return {f"{prefix}.gate_up_proj": (E, H, 2 * I), f"{prefix}.gate_up_proj_bias": (E, 2 * I),
                f"{prefix}.down_proj": (E, I, H), f"{prefix}.down_proj_bias": (E, H)}

    def checkpoint_name(self, hf_name: str) -> str:
        """The checkpoint key of a transformers parameter name outside the routed experts."""
        return hf_name.replace(".mlp.", f".{self.block}.") if self.block != "mlp" else hf_name


ARCHITECTURES = {
    a.model_type: a
    for a in (
        Architecture(
            model_type="qwen3_moe", label="Qwen3-MoE", model_class="Qwen3MoeForCausalLM",
            config_class="Qwen3MoeConfig", experts_field="num_experts",
            intermediate_field="moe_intermediate_size",
            moe_fields=("num_experts", "decoder_sparse_step", "mlp_only_layers"), block="mlp",
            expert_proj=("gate_proj", "up_proj", "down_proj"),
            routing="softmax top-k, renormalised (norm_topk_prob)",
            tiny=dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2, head_dim=64,
                      intermediate_size=512, moe_intermediate_size=128, num_experts=32,
                      num_experts_per_tok=4, norm_topk_prob=True, decoder_sparse_step=1,
                      mlp_only_layers=[]),
        ),
        Architecture(
            model_type="deepseek_v3", label="DeepSeek-V3", model_class="DeepseekV3ForCausalLM",
            config_class="DeepseekV3Config", experts_field="n_routed_experts",
            intermediate_field="moe_intermediate_size",
            moe_fields=("n_routed_experts", "first_k_dense_replace", "num_hidden_layers"), block="mlp",
            expert_proj=("gate_proj", "up_proj", "down_proj"),
            routing="sigmoid + bias, group-limited top-k, shared expert, routed_scaling_factor",
            tiny=dict(_COMMON, num_hidden_layers=3, first_k_dense_replace=1, num_key_value_heads=4,
                      intermediate_size=512, moe_intermediate_size=128, n_routed_experts=32,
                      num_experts_per_tok=4, n_group=4, topk_group=2, n_shared_experts=1,
                      routed_scaling_factor=2.5, norm_topk_prob=True, q_lora_rank=64, kv_lora_rank=64,
                      qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32),
        ),
        Architecture(
            model_type="mixtral", label="Mixtral", model_class="MixtralForCausalLM",
            config_class="MixtralConfig", experts_field="num_local_experts",
            intermediate_field="intermediate_size", moe_fields=("num_local_experts",),
            block="block_sparse_moe", expert_proj=("w1", "w3", "w2"),
            routing="softmax top-k, renormalised",
            tiny=dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2, intermediate_size=256,
                      num_local_experts=8, num_experts_per_tok=2),
        ),
        Architecture(
            model_type="gpt_oss", label="gpt-oss", model_class="GptOssForCausalLM",
            config_class="GptOssConfig", experts_field="num_local_experts",
            intermediate_field="intermediate_size", moe_fields=("num_local_experts",), block="mlp",
            expert_proj=("gate_up_proj", "gate_up_proj", "down_proj"),
            routing="softmax over the top-k logits (router bias); biased experts, clamped SwiGLU",
            tiny=dict(_COMMON, num_hidden_layers=2, num_key_value_heads=2, head_dim=64, intermediate_size=128,
                      num_local_experts=16, num_experts_per_tok=4, sliding_window=64, swiglu_limit=7.0,
                      max_position_embeddings=4096),
            expert_layout="gpt_oss",
        ),
    )
}


def architecture(model_type: str) -> Architecture:
    """The row of ``model_type``; an architecture without a row raises UnsupportedModelError
    naming the supported ones."""
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(f"model_type {model_type!r} is not a supported MoE architecture; supported: "
                         f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]
