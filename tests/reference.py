"""The reference every test compares against: pure numpy / torch, no kt_kernel code.

What it holds, each written from the format descriptions (the comments at the top of
cpp/src/formats/*.cpp and cpp/include/kt/formats.h), not from the package's implementation:

  bit conversions   fp32 <-> bf16 (round to nearest even), fp16 -> fp32
  dequantize        logical quantized arrays (as kt_kernel._ext.quantize returns them) -> fp32
  pack              the packed panel layout of each format, byte for byte
  activation        the per-token rounding the kernels apply to their inputs (f32, bf16, q8s/q8u)
  moe_forward       out[t] = sum_k w[t,k] * down_e(silu(gate_e x_t) * up_e x_t), e = ids[t,k]

moe_forward computes in float64. With ``act`` and ``slice_bounds`` it also rounds the activations
exactly as the kernels of a tier do (x once per token over H; the intermediate h per token, per
expert and per sub-pool slice of I), so that on the dequantized weights only summation order and
the bf16 rounding of the output separate it from the package.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

PANEL_N = 16  # output channels per packed panel
INT4_GROUP = 32  # k values per int4_g32 group
INT4_BLOCK_BYTES = 4 * 64 + 64  # per group and panel: 4 nibble blocks of 64 bytes, then d and m
FP8_GROUP = 128  # k values per fp8_g128 scale


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


# ---- bit conversions ----------------------------------------------------------------------


def f32_to_bf16_bits(x) -> np.ndarray:
    """fp32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    is_nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    quiet_nan = (u >> 16) | 0x40
    return np.where(is_nan, quiet_nan, rounded).astype(np.uint16)


def bf16_bits_to_f32(b) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_to_bf16(x) -> np.ndarray:
    """fp32 values rounded to the nearest bf16 (ties to even), as fp32."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x))


def f16_bits_to_f32(b) -> np.ndarray:
    return np.asarray(b, dtype=np.uint16).view(np.float16).astype(np.float32)


# ---- dequantizers -------------------------------------------------------------------------


def dequantize(q: dict) -> np.ndarray:
    """Logical quantized matrix (dict from kt_kernel._ext.quantize) -> fp32 [N, K].

    bf16      w = bf16 bits as fp32
    int8_pc   w = scale[n] * q[n, k]                      (one fp32 product)
    int4_g32  w = d[n, g] * q[n, k] + m[n, g], g = k // 32 (fp32 product, then fp32 sum;
                                                            d, m are fp16 bits)
    int4_g32_zp  w = d[n, g] * (q[n, k] - z[n, g])        (exact in fp32: d has 11 significant
                                                          bits, |q - z| <= 15; z uint8)
    fp8_g128  w = e4m3(q[n, k]) * scale[n, k // 128]      (torch's float8_e4m3fn, fp32 product)
    """
    fmt = q["format"]
    N, K = q["N"], q["K"]
    if fmt == "bf16":
        return bf16_bits_to_f32(q["values"]).reshape(N, K)
    if fmt == "int8_pc":
        v = np.asarray(q["values"], dtype=np.int8).astype(np.float32)
        return v * np.asarray(q["scale"], dtype=np.float32)[:, None]
    if fmt == "int4_g32":
        v = np.asarray(q["values"], dtype=np.uint8).astype(np.float32)
        d = np.repeat(f16_bits_to_f32(q["group_scale"]), INT4_GROUP, axis=1)[:, :K]
        m = np.repeat(f16_bits_to_f32(q["group_min"]), INT4_GROUP, axis=1)[:, :K]
        return d * v + m
    if fmt == "int4_g32_zp":
        v = np.asarray(q["values"], dtype=np.int32)
        z = np.repeat(np.asarray(q["group_zero"], dtype=np.int32), INT4_GROUP, axis=1)[:, :K]
        d = np.repeat(f16_bits_to_f32(q["group_scale"]).astype(np.float64), INT4_GROUP, axis=1)[:, :K]
        return (d * (v - z)).astype(np.float32)  # exact: the fp64 product is an fp32 value
    if fmt == "fp8_g128":
        v = torch.from_numpy(np.ascontiguousarray(q["values"], dtype=np.uint8)).view(torch.float8_e4m3fn).float().numpy()
        return v * np.repeat(np.asarray(q["scale"], dtype=np.float32), FP8_GROUP, axis=1)[:, :K]
    raise ValueError(f"reference has no dequantizer for format {fmt!r}")


def dequantize_int4_release(arrays: dict, proj: str, e: int) -> np.ndarray:
    """fp32 [N, K] of expert ``e``'s ``proj`` in an int4 release reader's layer_arrays (packed bytes
    with k even in the low nibble, int4_g32_zp's d and z), through dequantize."""
    packed = arrays[(proj, "qweight")][e]
    values = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1)
    return dequantize({"format": "int4_g32_zp", "N": values.shape[0], "K": values.shape[1], "values": values,
                       "group_scale": arrays[(proj, "scale")][e], "group_zero": arrays[(proj, "zero")][e]})


# ---- packers ------------------------------------------------------------------------------


def _slice_padded(a: np.ndarray, n0: int, n1: int, k0: int, k1: int, kp: int) -> np.ndarray:
    """a[n0:n1, k0:k1] zero-padded to [whole panels of 16 rows, kp columns]."""
    panels = -(-(n1 - n0) // PANEL_N)
    out = np.zeros((panels * PANEL_N, kp), dtype=a.dtype)
    out[: n1 - n0, : k1 - k0] = a[n0:n1, k0:k1]
    return out


def pack_bf16(q: dict, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    """Panel of 16 channels, one 64-byte step per k pair: step s = [c0:k c0:k+1 | c1:k c1:k+1 | ...]."""
    kp = round_up(k1 - k0, 2)
    v = _slice_padded(np.asarray(q["values"], dtype=np.uint16), n0, n1, k0, k1, kp)
    panels = v.shape[0] // PANEL_N
    # [panel, channel, step, parity] -> [panel, step, channel, parity]
    packed = v.reshape(panels, PANEL_N, kp // 2, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(packed).astype("<u2").view(np.uint8).reshape(-1)


def pack_int8_pc(q: dict, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    """Panel: Kp/4 steps of [c0: q q q q | ... | c15: q q q q], then 16 fp32 scales, then
    16 int32 comp = 128 * sum_k q (over the packed columns k0..k1)."""
    kp = round_up(k1 - k0, 4)
    v = _slice_padded(np.asarray(q["values"], dtype=np.int8), n0, n1, k0, k1, kp)
    panels = v.shape[0] // PANEL_N
    scale = np.zeros(panels * PANEL_N, dtype="<f4")
    scale[: n1 - n0] = np.asarray(q["scale"], dtype=np.float32)[n0:n1]
    comp = (128 * v.astype(np.int64).sum(axis=1)).astype("<i4")
    out = []
    for p in range(panels):
        rows = slice(p * PANEL_N, (p + 1) * PANEL_N)
        body = v[rows].reshape(PANEL_N, kp // 4, 4).transpose(1, 0, 2)
        out += [np.ascontiguousarray(body).view(np.uint8).reshape(-1),
                scale[rows].view(np.uint8), comp[rows].view(np.uint8)]
    return np.concatenate(out) if out else np.zeros(0, np.uint8)


def pack_int4_g32(q: dict, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    """Panel: per group of 32 k, 4 blocks of 64 bytes with byte [4c + i] of block j =
    q[c, 8j+i] | q[c, 8j+4+i] << 4, then 16 fp16 d and 16 fp16 m (320 bytes). int4_g32_zp: the same,
    with -z as an fp16 value where m is."""
    assert k0 % INT4_GROUP == 0
    kp = round_up(k1 - k0, INT4_GROUP)
    v = _slice_padded(np.asarray(q["values"], dtype=np.uint8), n0, n1, k0, k1, kp)
    panels = v.shape[0] // PANEL_N
    groups = kp // INT4_GROUP
    g0 = k0 // INT4_GROUP
    d = np.zeros((panels * PANEL_N, groups), dtype="<u2")
    m = np.zeros((panels * PANEL_N, groups), dtype="<u2")
    d[: n1 - n0] = np.asarray(q["group_scale"], dtype=np.uint16)[n0:n1, g0 : g0 + groups]
    if q["format"] == "int4_g32_zp":
        z = np.asarray(q["group_zero"], dtype=np.uint8)[n0:n1, g0 : g0 + groups]
        m[: n1 - n0] = (-z.astype(np.float16)).view(np.uint16)
    else:
        m[: n1 - n0] = np.asarray(q["group_min"], dtype=np.uint16)[n0:n1, g0 : g0 + groups]
    out = []
    for p in range(panels):
        rows = slice(p * PANEL_N, (p + 1) * PANEL_N)
        for g in range(groups):
            blk = v[rows, g * INT4_GROUP : (g + 1) * INT4_GROUP]  # [16 c, 32 kk]
            # kk = 8 j + 4 h + i  ->  [c, j, h, i]
            blk = blk.reshape(PANEL_N, 4, 2, 4)
            byte = blk[:, :, 0, :] | (blk[:, :, 1, :] << 4)  # [c, j, i]
            out.append(np.ascontiguousarray(byte.transpose(1, 0, 2)).reshape(-1))
            out.append(np.ascontiguousarray(d[rows, g]).view(np.uint8))
            out.append(np.ascontiguousarray(m[rows, g]).view(np.uint8))
    return np.concatenate(out).astype(np.uint8) if out else np.zeros(0, np.uint8)


def pack_fp8_g128(q: dict, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    """Panel: per group of 128 k, 32 words of 64 bytes, then 16 fp32 scales (2112 bytes). Word g:
    for each 4 channels 4L..4L+3, 16 bytes: their k = 4g, 4g+1 channel by channel, then 4g+2, 4g+3,
    i.e. byte [16 L + 8 h + 2 j + i] = q[4L + j, 4g + 2h + i]."""
    assert k0 % FP8_GROUP == 0
    kp = round_up(k1 - k0, FP8_GROUP)
    v = _slice_padded(np.asarray(q["values"], dtype=np.uint8), n0, n1, k0, k1, kp)
    panels, groups, g0 = v.shape[0] // PANEL_N, kp // FP8_GROUP, k0 // FP8_GROUP
    s = np.zeros((panels * PANEL_N, groups), dtype="<f4")
    s[: n1 - n0] = np.asarray(q["scale"], dtype=np.float32)[n0:n1, g0 : g0 + groups]
    out = []
    for p in range(panels):
        rows = slice(p * PANEL_N, (p + 1) * PANEL_N)
        for g in range(groups):
            blk = v[rows, g * FP8_GROUP : (g + 1) * FP8_GROUP].reshape(4, 4, 32, 2, 2)  # [L, j, word, h, i]
            out.append(np.ascontiguousarray(blk.transpose(2, 0, 3, 1, 4)).reshape(-1))  # [word, L, h, j, i]
            out.append(np.ascontiguousarray(s[rows, g]).view(np.uint8))
    return np.concatenate(out).astype(np.uint8) if out else np.zeros(0, np.uint8)


PACKERS = {"bf16": pack_bf16, "int8_pc": pack_int8_pc, "int4_g32": pack_int4_g32, "int4_g32_zp": pack_int4_g32,
           "fp8_g128": pack_fp8_g128}


def pack(q: dict, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    return PACKERS[q["format"]](q, n0, n1, k0, k1)


# ---- activation rounding ------------------------------------------------------------------


def quantize_q8(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-row int8 rounding in fp32: s = amax/127, q = round_half_even(x * (127/amax)), or
    round_half_even(x / s) where 127/amax overflows (amax below ~3.7e-37).
    Returns q (int8 [R, K]) and s (fp32 [R])."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    s = amax / np.float32(127)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(s > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        by_mul = x * inv[:, None]
        by_div = x / np.where(s > 0, s, 1)[:, None]
    q = np.rint(np.where(np.isinf(inv)[:, None], by_div, by_mul))
    return q.astype(np.int8), s.astype(np.float32)


# The GGUF kernels' activation blocks (kt/gguf_blocks.h): k per block, each with its own scale.
ACT_BLOCK = {"q8_32": 32, "q8_256": 256}


def round_activation(x, act: str) -> np.ndarray:
    """The values (as fp32) that a kernel reading activation format `act` sees for rows x."""
    x = np.asarray(x, dtype=np.float32)
    if act == "f32":
        return x.copy()
    if act == "bf16":
        return round_to_bf16(x)
    if act in ("q8s", "q8u"):  # q8u stores q + 128: the same rounding
        q, s = quantize_q8(x)
        return q.astype(np.float32) * s[:, None]
    if act in ACT_BLOCK:  # the q8s rule per block of the row (K a multiple of the block)
        R, K = x.shape
        q, s = quantize_q8(x.reshape(R * K // ACT_BLOCK[act], ACT_BLOCK[act]))
        return (q.astype(np.float32) * s[:, None]).reshape(R, K)
    raise ValueError(f"unknown activation format {act!r}")


# ---- sub-pool split of I ------------------------------------------------------------------


def slice_bounds(intermediate: int, subpools: int, group: int, k_align: int) -> list[int]:
    """Sub-pool p owns intermediate channels [b[p], b[p+1]): I is cut in units of
    max(16, group or k_align) channels, spread as evenly as possible, earlier pools first."""
    unit = max(PANEL_N, group or k_align)
    units = -(-intermediate // unit)
    bounds, done = [0], 0
    for p in range(subpools):
        done += units // subpools + (1 if p < units % subpools else 0)
        bounds.append(min(done * unit, intermediate))
    return bounds


# ---- the MoE forward ----------------------------------------------------------------------


def moe_forward(
    x,
    topk_ids,
    topk_weights,
    gate,
    up,
    down,
    physical_to_logical_map: Optional[Sequence[int]] = None,
    gpu_mask: Optional[Sequence[bool]] = None,
    act: Optional[str] = None,
    slice_bounds: Optional[Sequence[int]] = None,
    h_act: Optional[str] = None,
    glu: Optional[dict] = None,
) -> torch.Tensor:
    """Reference forward in float64.

    x [M, H]; topk_ids [M, K] physical slots (-1 = none); topk_weights [M, K];
    gate, up [E_logical, I, H]; down [E_logical, H, I]. Slot p uses logical expert map[p];
    slots with gpu_mask[p] and ids of -1 contribute nothing.
    act: None for exact fp32 inputs, or the kernel's activation format ("f32", "bf16", "q8s",
    "q8u") to round x per token and h per (token, expert) row within each [b, b') of
    slice_bounds as the kernels do; h_act, if given, is the down kernels' format for h (a GGUF
    layer whose down tensor has another type than gate/up). glu: gpt-oss-style experts, a dict
    of gate_bias, up_bias [E_logical, I], down_bias [E_logical, H] (each optional), limit (0: no
    clamp) and alpha (0: SiLU): g = min(g + bg, limit), u = clamp(u + bu, -limit, limit),
    h = g sigmoid(alpha g) (u + 1) (alpha != 0) or silu(g) u, y = down h + bd. Returns float64 [M, H].
    """
    x = torch.as_tensor(x).float()
    ids = torch.as_tensor(topk_ids).long()
    w = torch.as_tensor(topk_weights).double()
    gate, up, down = (torch.as_tensor(t).double() for t in (gate, up, down))
    M, H = x.shape
    if physical_to_logical_map is not None:
        E = len(physical_to_logical_map)
    elif gpu_mask is not None:
        E = len(gpu_mask)
    else:
        E = gate.shape[0]
    pmap = list(range(E)) if physical_to_logical_map is None else [int(v) for v in physical_to_logical_map]
    gpu = [False] * E if gpu_mask is None else [bool(v) for v in gpu_mask]
    I = gate.shape[1]
    bounds = [0, I] if slice_bounds is None else list(slice_bounds)

    xin = x if act is None else torch.from_numpy(round_activation(x.numpy(), act))
    xin = xin.double()
    out = torch.zeros(M, H, dtype=torch.float64)
    for p in range(E):
        if gpu[p]:
            continue
        tok, k = torch.nonzero(ids == p, as_tuple=True)
        if tok.numel() == 0:
            continue
        e = pmap[p]
        xs = xin[tok]
        g = xs @ gate[e].T
        u = xs @ up[e].T
        h = torch.nn.functional.silu(g) * u if glu is None else _gated(g, u, e, glu)  # [rows, I]
        if act is not None:
            h32 = h.float().numpy()
            parts = [round_activation(h32[:, b0:b1], h_act or act) for b0, b1 in zip(bounds[:-1], bounds[1:])]
            h = torch.from_numpy(np.concatenate(parts, axis=1)).double()
        y = h @ down[e].T
        if glu is not None and glu.get("down_bias") is not None:
            y = y + torch.as_tensor(glu["down_bias"]).double()[e]
        out.index_add_(0, tok, w[tok, k][:, None] * y)
    return out


def _gated(g, u, e, glu):
    """gpt-oss's expert activation in float64 (moe_forward's glu)."""
    if glu.get("gate_bias") is not None:
        g = g + torch.as_tensor(glu["gate_bias"]).double()[e]
    if glu.get("up_bias") is not None:
        u = u + torch.as_tensor(glu["up_bias"]).double()[e]
    limit, alpha = glu.get("limit", 0.0), glu.get("alpha", 0.0)
    if limit:
        g = g.clamp(max=limit)
        u = u.clamp(-limit, limit)
    if alpha:
        return g * torch.sigmoid(alpha * g) * (u + 1)
    return torch.nn.functional.silu(g) * u
