"""The MoE layer in plain PyTorch: the reference and the peer of docs/benchmark_protocol.md.

    out[t] = sum_k  w[t,k] * down_e( silu(gate_e(x_t)) * up_e(x_t) ),   e = topk_ids[t,k]

:func:`moe_forward` groups the tokens by expert and runs ``F.linear``, ``silu`` and
``index_add_`` per expert. With ``compute_dtype=torch.bfloat16`` (bf16 weights) it is the
PyTorch peer the benchmarks compare against; with ``compute_dtype=torch.float32`` it is the fp32
reference on the original weights (each expert's weights are widened to fp32 as it is used, so
no fp32 copy of the whole layer is held).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["moe_forward", "TORCH_PEER"]

TORCH_PEER = "torch-bf16"


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
