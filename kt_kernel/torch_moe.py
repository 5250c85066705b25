"""The MoE layer in plain PyTorch: the reference and the peer of docs/benchmark_protocol.md.

    out[t] = sum_k  w[t,k] * down_e( silu(gate_e(x_t)) * up_e(x_t) ),   e = topk_ids[t,k]

:func:`moe_forward` groups the tokens by expert and runs ``F.linear``, ``silu`` and
``index_add_`` per expert. With ``compute_dtype=torch.bfloat16`` (bf16 weights) it is the
PyTorch peer the benchmarks compare against; with ``compute_dtype=torch.float32`` it is the fp32
reference on the original weights (each expert's weights are widened to fp32 as it is used, so
no fp32 copy of the whole layer is held).

The ``random_*`` helpers make the protocol's inputs: ``x`` bf16 ``[M, H]``, K distinct experts
per token drawn uniformly at random from a seeded generator, routing weights = softmax of random
logits (fp32 ``[M, K]``), and random expert weights at a realistic scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["moe_forward", "random_expert_weights", "random_routing", "random_inputs", "relative_error",
           "REL_ERR_BOUNDS", "TORCH_PEER"]

TORCH_PEER = "torch-bf16"

# Bound on relative_error(out, fp32 reference) per method, for the random layers made here
# (normal(0, 1/fan_in) weights, normal(0, 1) activations). Measured on shapes A and S:
# torch bf16 ~0.004, BF16 ~0.002 (bf16 activations), AMXINT8 ~0.027 (int8 per channel, int8
# activations), AMXINT4 ~0.13 (int4 groups of 32 through three projections). The bounds leave
# 1.4-2x margin and equal the fp32_rel bounds of tests/conftest.py; a method that drifts past one
# has lost accuracy, whatever its speed.
REL_ERR_BOUNDS = {TORCH_PEER: 0.01, "BF16": 0.01, "AMXINT8": 0.04, "AMXINT4": 0.2}


def moe_forward(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                gate_proj: torch.Tensor, up_proj: torch.Tensor, down_proj: torch.Tensor,
                compute_dtype: torch.dtype | None = None,
                out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """One MoE layer forward in plain torch.

    x: [M, H]; topk_ids: [M, K] integer, -1 marks a slot that contributes nothing;
    topk_weights: [M, K]; gate_proj, up_proj: [E, I, H]; down_proj: [E, H, I].
    Activations and weights are cast to ``compute_dtype`` (default: the weights' dtype) before
    each ``F.linear``; the weighted sum over the K experts is accumulated in fp32.
    Returns ``out_dtype`` [M, H].
    """
    M, H = x.shape
    E, I, _ = gate_proj.shape
    K = topk_ids.shape[1]
    if topk_ids.shape != (M, K) or topk_weights.shape != (M, K):
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
                         f"must both be [M={M}, K]")
    if up_proj.shape != (E, I, H) or down_proj.shape != (E, H, I) or gate_proj.shape[2] != H:
        raise ValueError(f"gate_proj {tuple(gate_proj.shape)}, up_proj {tuple(up_proj.shape)}, down_proj "
                         f"{tuple(down_proj.shape)}: expected [E, I, H], [E, I, H], [E, H, I] with H={H}")
    dt = compute_dtype or gate_proj.dtype

    # Group the M*K (token, slot) pairs by expert: after a stable sort, expert e owns the
    # pairs order[start_e : start_e + counts[e]]; pairs with id -1 sort first and are skipped.
    flat_ids = topk_ids.reshape(-1).to(torch.int64)
    flat_w = topk_weights.reshape(-1).to(torch.float32)
    sorted_ids, order = torch.sort(flat_ids, stable=True)
    skipped = int((sorted_ids < 0).sum())
    counts = torch.bincount(sorted_ids[skipped:], minlength=E).tolist()
    if len(counts) > E:
        raise ValueError(f"topk_ids holds expert {len(counts) - 1}, but the weights have E={E} experts")

    xc = x.to(dt)
    out = torch.zeros(M, H, dtype=torch.float32)
    start = skipped
    for e, n in enumerate(counts):
        if n == 0:
            continue
        pairs = order[start:start + n]
        start += n
        tok = pairs // K                                              # tokens routed to e: [n]
        xe = xc[tok]                                                  # [n, H]
        h = F.silu(F.linear(xe, gate_proj[e].to(dt))) * F.linear(xe, up_proj[e].to(dt))   # [n, I]
        y = F.linear(h, down_proj[e].to(dt))                          # [n, H]
        out.index_add_(0, tok, y.to(torch.float32) * flat_w[pairs, None])
    return out.to(out_dtype)


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


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_2 / ||ref||_2, computed in fp64."""
    ref = ref.to(torch.float64)
    return float(torch.linalg.vector_norm(out.to(torch.float64) - ref) / torch.linalg.vector_norm(ref))
