"""Random MoE layers and calls, seeded: the protocol's inputs (docs/benchmark_protocol.md) for the demos,
tests and benchmarks.

``x`` bf16 ``[M, H]``, K distinct experts per token drawn uniformly at random, routing weights =
softmax of random logits (fp32 ``[M, K]``), and random expert weights at a realistic scale.
"""
from __future__ import annotations

import torch

__all__ = ["random_expert_weights", "random_routing", "random_inputs"]


def random_expert_weights(E: int, H: int, I: int, seed: int = 0, dtype: torch.dtype = torch.bfloat16):
    """Random gate [E, I, H], up [E, I, H] and down [E, H, I] in ``dtype``.

    Entries are normal(0, 1) / sqrt(fan_in) (fan_in = H for gate and up, I for down), the scale of
    an initialised linear layer, so that activations keep unit size through the layer. Drawn one
    expert at a time in fp32, so the fp32 temporaries stay one expert large.
    """
    g = torch.Generator().manual_seed(seed)
    mats = []
    for shape, fan_in in (((E, I, H), H), ((E, I, H), H), ((E, H, I), I)):
        w = torch.empty(shape, dtype=dtype)
        for e in range(E):
            w[e].copy_(torch.randn(shape[1:], generator=g).mul_(fan_in ** -0.5))
        mats.append(w)
    gate, up, down = mats
    return gate, up, down


def random_routing(M: int, E: int, K: int, seed: int = 0):
    """topk_ids int64 [M, K]: K distinct experts per token, uniformly at random;
    topk_weights fp32 [M, K]: softmax of normal(0, 1) logits. Seeded: the same (M, E, K, seed)
    gives the same routing, and row t does not depend on M."""
    if K > E:
        raise ValueError(f"K={K} distinct experts per token cannot be drawn from E={E}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.empty(M, K, dtype=torch.int64)
    logits = torch.empty(M, K, dtype=torch.float32)
    for t in range(M):  # one row at a time, so that row t is the same for every M
        ids[t] = torch.randperm(E, generator=g)[:K]
        logits[t] = torch.randn(K, generator=g)
    return ids, torch.softmax(logits, dim=-1)


def random_inputs(M: int, H: int, E: int, K: int, seed: int = 0):
    """The protocol's inputs for one call: x bf16 [M, H] (normal(0, 1)), topk_ids, topk_weights."""
    topk_ids, topk_weights = random_routing(M, E, K, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(M, H, generator=g).to(torch.bfloat16)
    return x, topk_ids, topk_weights
