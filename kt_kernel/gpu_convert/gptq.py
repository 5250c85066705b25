"""GPTQ on the CPU: the weight quantization of the GPU side (issue 23), one linear layer at a time.

GPTQ (Frantar et al., 2022) quantizes W [N, K] column by column against the layer's input
statistics H = 2 X^T X (X: calibration inputs [T, K]), so that ||X W^T - X Q^T|| stays small rather
than ||W - Q||: after column k is rounded, its error (w - q) / [H^-1]_kk times row k of the upper
Cholesky factor of H^-1 is taken out of the columns not yet rounded. Columns go in blocks of
``block`` (the updates inside a block, then one matrix product for the rest), group scales are
fitted on the weights as they stand when the group's first column is reached. With ``act_order``
the columns go by decreasing H_kk (the most salient first) while the groups stay the contiguous
runs of ``group`` columns, their parameters fitted on the original weights before any column is
rounded (llmcompressor's "static" act-order): the checkpoint needs no g_idx, which
compressed-tensors' decompressor (and so transformers on the CPU) would not apply. H is damped by
``damp`` times its mean diagonal; a column that no input touches (H_kk = 0) is zeroed and left
out. Scales are rounded to ``scale_dtype`` (the checkpoint's) before any weight is rounded
against them, so that the stored scale times the stored integers is exactly the weight computed
here.

Quantization grid, as compressed-tensors defines it for ``num_bits`` b: symmetric q in
[-2^(b-1), 2^(b-1) - 1], scale = max|w| / ((2^b - 1) / 2), zero point 0; asymmetric q in the same
range with scale = (max - min) / (2^b - 1) and zero point z = round(-min / scale) - 2^(b-1), so that
w = scale * (q - z). ``rtn_quantize`` rounds to nearest on the same grid: the baseline GPTQ must beat.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

__all__ = ["QuantizedLinear", "gptq_quantize", "rtn_quantize", "layer_error", "hessian", "inverse_upper_factor"]


@dataclass
class QuantizedLinear:
    """A quantized [N, K] weight: q int8 [N, K], scale (``scale_dtype``) and zero_point int8
    [N, K / group] (zero_point all 0 when symmetric); column k is in group k // group."""
    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    group_size: int
    num_bits: int
    symmetric: bool

    def rows(self, r0: int, r1: int) -> "QuantizedLinear":
        """Output channels r0..r1 (GPTQ and RTN treat rows independently: quantizing a stack of
        weights that share their inputs gives each the rows it would get alone)."""
        return QuantizedLinear(self.q[r0:r1], self.scale[r0:r1], self.zero_point[r0:r1], self.group_size,
                               self.num_bits, self.symmetric)

    def dequantize(self) -> torch.Tensor:
        """scale * (q - zero_point), fp32 (exact: 8-bit integers times a bf16/fp16/fp32 scale)."""
        cols = torch.arange(self.q.shape[1]) // self.group_size
        return self.scale.float()[:, cols] * (self.q.float() - self.zero_point[:, cols].float())


def hessian(x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """H = 2 X^T X / T (fp64) of calibration inputs x [T, K]: fp32 products of ``chunk`` tokens at a
    time (fp32 GEMMs run 2-4x faster than fp64 ones), summed in fp64."""
    x = x.reshape(-1, x.shape[-1]).float()
    h = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for t in range(0, x.shape[0], chunk):
        xc = x[t:t + chunk]
        h += (xc.T @ xc).double()
    return (2.0 / max(x.shape[0], 1)) * h


def _params(w: torch.Tensor, num_bits: int, symmetric: bool, scale_dtype: torch.dtype) -> tuple:
    """Scale (a ``scale_dtype`` value, held in fp64) and zero point [N] of the columns w [N, g] on
    compressed-tensors' grid."""
    qmax = 2 ** (num_bits - 1) - 1
    qmin = -(2 ** (num_bits - 1))
    if symmetric:
        scale = w.abs().amax(dim=1) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale)
    else:
        lo, hi = w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale))) + qmin
    scale = scale.to(scale_dtype).to(torch.float64)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: any scale, q = z
    return scale, zero


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, num_bits: int) -> torch.Tensor:
    q = torch.round(w / scale + zero)
    return q.clamp(-(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1)


def rtn_quantize(w: torch.Tensor, num_bits: int = 4, group_size: int = 128, symmetric: bool = True,
                 scale_dtype: torch.dtype = torch.float32) -> QuantizedLinear:
    """Round to nearest on GPTQ's grid, per group of ``group_size`` columns (0: per channel)."""
    N, K = w.shape
    g = group_size or K
    if K % g:
        raise ValueError(f"group_size={group_size} does not divide the input dimension {K}")
    w = w.to(torch.float64)
    q = torch.empty(N, K, dtype=torch.int8)
    scale, zero = torch.empty(N, K // g, dtype=torch.float64), torch.empty(N, K // g, dtype=torch.float64)
    for j in range(K // g):
        cols = slice(j * g, (j + 1) * g)
        scale[:, j], zero[:, j] = _params(w[:, cols], num_bits, symmetric, scale_dtype)
        q[:, cols] = _round(w[:, cols], scale[:, j:j + 1], zero[:, j:j + 1], num_bits).to(torch.int8)
    return QuantizedLinear(q, scale.to(scale_dtype), zero.to(torch.int8), g, num_bits, symmetric)


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, num_bits: int = 4, group_size: int = 128, symmetric: bool = True,
                  act_order: bool = False, damp: float = 0.01, block: int = 128,
                  scale_dtype: torch.dtype = torch.float32) -> QuantizedLinear:
    """GPTQ of w [N, K] against H [K, K] (``hessian``); group_size 0: per channel."""
    N, K = w.shape
    g = group_size or K
    if K % g:
        raise ValueError(f"group_size={group_size} does not divide the input dimension {K}")
    if h.shape != (K, K):
        raise ValueError(f"the Hessian is {tuple(h.shape)}, expected ({K}, {K}) for a weight of {K} columns")
    if not 0 <= damp < 1:
        raise ValueError(f"damp={damp} must be in [0, 1)")
    W = w.float().clone()  # H in fp64; its factor (inverse_upper_factor) and the column updates in fp32
    H = h.to(torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    groups = K // g
    scale, zero = torch.empty(N, groups, dtype=torch.float64), torch.empty(N, groups, dtype=torch.float64)
    if act_order:  # static groups: every group's parameters from the original weights
        for j in range(groups):
            scale[:, j], zero[:, j] = _params(W[:, j * g:(j + 1) * g].double(), num_bits, symmetric, scale_dtype)
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    group_of = (torch.arange(K) // g)[perm].tolist()  # the group of each column in processing order
    H += damp * torch.diagonal(H).mean() * torch.eye(K, dtype=torch.float64)
    U = inverse_upper_factor(H)

    Q = torch.empty(N, K, dtype=torch.float32)
    for b0 in range(0, K, block):
        b1 = min(b0 + block, K)
        W1, E1, U1 = W[:, b0:b1].clone(), torch.zeros(N, b1 - b0), U[b0:b1, b0:b1]
        for i in range(b1 - b0):
            k = b0 + i
            j = group_of[k]
            if not act_order and k % g == 0:  # the group's parameters from the weights as they stand now
                cols = W1[:, i:i + g]
                if cols.shape[1] < g:
                    cols = torch.cat([cols, W[:, b1:b1 + g - cols.shape[1]]], dim=1)
                scale[:, j], zero[:, j] = _params(cols.double(), num_bits, symmetric, scale_dtype)
            s, z = scale[:, j], zero[:, j]
            wk = W1[:, i].double()
            q = _round(wk, s, z, num_bits)
            Q[:, k] = q.float()
            err = ((wk - s * (q - z)) / float(U1[i, i])).float()
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            E1[:, i] = err
        W[:, b1:] -= E1 @ U[b0:b1, b1:]
    inv = torch.argsort(perm)
    return QuantizedLinear(Q[:, inv].to(torch.int8), scale.to(scale_dtype), zero.to(torch.int8), g, num_bits,
                           symmetric)


def inverse_upper_factor(h: torch.Tensor) -> torch.Tensor:
    """fp32 U, upper triangular, with U^T U = H^-1, from one Cholesky factorization in fp32: with J the
    exchange matrix, J H J = L L^T gives H = R R^T for the upper R = J L J, so U = R^-1 = J L^-1 J
    (half the work of factorizing H, inverting it and factorizing the inverse; relative error about
    1e-5 at K = 7168 with 1% dampening)."""
    L = torch.linalg.cholesky(h.float().flip(0, 1))
    eye = torch.eye(h.shape[0], dtype=torch.float32)
    return torch.linalg.solve_triangular(L, eye, upper=False).flip(0, 1)


def layer_error(w: torch.Tensor, wq: torch.Tensor, h: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """The layer's output error on the calibration inputs: tr((W - Q) H (W - Q)^T) / 2, i.e. the
    mean over tokens of ||x (W - Q)^T||^2 for H = 2 X^T X / T; computed in ``dtype`` (fp32: a
    report's precision, 2-4x faster at N K^2 operations)."""
    d = (w.to(torch.float64) - wq.to(torch.float64)).to(dtype)
    return float(((d @ h.to(dtype)) * d).sum(dtype=torch.float64) / 2)
