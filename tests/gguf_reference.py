"""The independent reference of the GGUF block formats: the `gguf` package's own dequantizer
(gguf.quants.dequantize) is the truth of every block type; blocks are drawn at random here, and
the packed layout is rebuilt in numpy from its description (cpp/src/formats/gguf_format.h)."""
from __future__ import annotations

import gguf
import numpy as np

from reference import PANEL_N

Q = gguf.GGMLQuantizationType

# kt format name -> ggml type (the names are ggml's, lower-cased but for the K of the K-quants)
GGML_TYPES = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q5_0": Q.Q5_0, "q5_1": Q.Q5_1, "q8_0": Q.Q8_0,
              "q2_K": Q.Q2_K, "q3_K": Q.Q3_K, "q4_K": Q.Q4_K, "q5_K": Q.Q5_K, "q6_K": Q.Q6_K,
              "iq4_nl": Q.IQ4_NL, "iq4_xs": Q.IQ4_XS, "mxfp4": Q.MXFP4, "bf16": Q.BF16, "f16": Q.F16, "f32": Q.F32}

# Byte offsets of the fp16 scale fields in each block (ggml-common.h); every other bit pattern of a
# block is a valid block.
FP16_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "iq4_nl": [0],
               "q2_K": [80, 82], "q3_K": [108], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208], "iq4_xs": [0],
               "mxfp4": []}
# Byte offsets of the ue8m0 exponent fields (2^(e - 128) for mxfp4); 0xff is the format's NaN.
E8M0_FIELDS = {"mxfp4": [0]}


def block_size(fmt: str) -> tuple[int, int]:
    """(weights, bytes) of one block of `fmt`."""
    return gguf.GGML_QUANT_SIZES[GGML_TYPES[fmt]]


def row_bytes(fmt: str, K: int) -> int:
    k, b = block_size(fmt)
    assert K % k == 0, f"{fmt} rows hold whole blocks of {k}"
    return K // k * b


def fp16_scales(rng: np.random.Generator, n: int, scale: float, subnormal_share: float = 0.25) -> np.ndarray:
    """n finite fp16 values of magnitude about `scale` (log-uniform over 4 octaves below it), random
    signs, and a share of fp16 subnormals (below 2^-14), as real files hold for small weights."""
    mag = scale * 2.0 ** -rng.uniform(0, 4, n)
    sub = rng.random(n) < subnormal_share
    mag[sub] = rng.uniform(2.0**-24, 2.0**-14, sub.sum())
    v = (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)
    return v


def random_blocks(fmt: str, N: int, K: int, rng: np.random.Generator, scale: float = 2.0**-6,
                  exact: bool = False) -> np.ndarray:
    """uint8 [N, row_bytes] of random valid `fmt` rows. exact: every fp16 field a power of two
    (2^-6 or 2^-7), so that products of a block's integers with its scales are exact in fp32."""
    if fmt in ("bf16", "f16", "f32"):
        w = rng.standard_normal((N, K)).astype(np.float32) * np.float32(scale * 4)
        if fmt == "f32":
            return w.view(np.uint8).reshape(N, K * 4)
        if fmt == "f16":
            return w.astype(np.float16).view(np.uint8).reshape(N, K * 2)
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(N, K * 2)
    nb = K // block_size(fmt)[0]
    size = block_size(fmt)[1]
    raw = rng.integers(0, 256, (N * nb, size), dtype=np.uint8)
    for off in E8M0_FIELDS.get(fmt, []):
        # scale 2^(e - 128) about `scale` (exact: 2^-6 or 2^-7), and a share of e 0 and 1 (subnormal scales)
        top = 128 + int(np.log2(scale))
        e = rng.integers(top - 1, top + 1, N * nb) if exact else rng.integers(top - 4, top + 1, N * nb)
        if not exact:
            e[rng.random(N * nb) < 0.05] = rng.integers(0, 2)
        raw[:, off] = e.astype(np.uint8)
    for off in FP16_FIELDS[fmt]:
        if exact:
            d = (2.0 ** -rng.integers(6, 8, N * nb)).astype(np.float16)
        else:
            d = fp16_scales(rng, N * nb, scale)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(N * nb, 2)
    return raw.reshape(N, nb * size)


def dequantize(fmt: str, blocks: np.ndarray, K: int) -> np.ndarray:
    """fp32 [N, K]: gguf's dequantization of rows of `fmt` blocks."""
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    return gguf.quants.dequantize(blocks, GGML_TYPES[fmt]).reshape(blocks.shape[0], K).astype(np.float32)


def as_quantized(fmt: str, blocks: np.ndarray, K: int) -> dict:
    """The dict of `_ext.dequantize` / `_ext.pack` / the kernel hooks for rows of blocks."""
    name = "values" if fmt in ("bf16", "f16", "f32") else "blocks"
    arr = blocks
    if fmt in ("bf16", "f16"):
        arr = blocks.view(np.uint16)
    elif fmt == "f32":
        arr = blocks.view(np.float32)
    return {"format": fmt, "N": blocks.shape[0], "K": K, name: np.ascontiguousarray(arr)}


def pack(fmt: str, blocks: np.ndarray, n0: int, n1: int, k0: int, k1: int) -> np.ndarray:
    """The packed panels of rows [n0, n1), k [k0, k1) of a block format: per k-block, the 16 rows'
    blocks side by side; rows past n1 zero."""
    kk, size = block_size(fmt)
    b0, b1 = k0 // kk, k1 // kk
    panels = -(-(n1 - n0) // PANEL_N)
    rows = np.zeros((panels * PANEL_N, b1 - b0, size), np.uint8)
    rows[: n1 - n0] = blocks[n0:n1].reshape(n1 - n0, -1, size)[:, b0:b1]
    # [panel, row in panel, block, bytes] -> [panel, block, row in panel, bytes]
    return rows.reshape(panels, PANEL_N, b1 - b0, size).transpose(0, 2, 1, 3).reshape(-1)
