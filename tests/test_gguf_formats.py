"""The GGUF formats (method LLAMAFILE) against their independent reference (tests/gguf_reference.py:
gguf's own dequantizer, random valid blocks, a numpy packer): the record, the dequantizer and the
packer bit for bit, our quantizers' error, and every kernel row this CPU runs, on random blocks
(within the fp32 summation bound) and on blocks whose arithmetic is exact (bit for bit)."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

import kt_kernel
from kt_kernel import _ext
from kt_kernel.formats import GGUF_METHOD, all_formats

import gguf_reference as gr
import reference

# LLAMAFILE's formats, and mxfp4: method MXFP4's format is a GGUF block type too
GGUF_FORMATS = [f for f in all_formats() if f["method"] == GGUF_METHOD or f["arrays"][0]["per"] == "block"]
BLOCK_FORMATS = [f for f in GGUF_FORMATS if f["arrays"][0]["per"] == "block"]
HOST_FEATURES = set(kt_kernel.cpu_info()["features"])
# (format, kernel row) for every row of every GGUF format that this CPU can run
RUNNABLE_ROWS = [(f["name"], r["name"]) for f in GGUF_FORMATS for r in _ext.kernel_table()
                 if r["format"] == f["name"] and set(r["features"]) <= HOST_FEATURES]


def _ids(formats):
    return [f["name"] for f in formats]


def _k_of(fmt: str, blocks: int) -> int:
    return gr.block_size(fmt)[0] * blocks if fmt not in ("f16", "f32") else 32 * blocks


def _record(fmt: str) -> dict:
    return next(f for f in GGUF_FORMATS if f["name"] == fmt)


@pytest.mark.parametrize("f", GGUF_FORMATS, ids=_ids(GGUF_FORMATS))
def test_record_describes_the_ggml_type(f):
    ggml = gr.GGML_TYPES[f["name"]]
    assert f["gguf_type"] == int(ggml)
    kk, size = gr.block_size(f["name"])
    assert f["k_align"] == kk and f["block_bytes"] == size * reference.PANEL_N
    assert f["bits_per_weight"] == pytest.approx(size * 8 / kk)
    assert f["quant_method"] == "", "GGUF formats are not converter outputs"
    assert len(f["arrays"]) == 1 and len(f["acts"]) == 1 and f["kernels"], f


@pytest.mark.parametrize("f", GGUF_FORMATS, ids=_ids(GGUF_FORMATS))
def test_dequantize_is_ggufs_bit_for_bit(f):
    fmt, K = f["name"], _k_of(f["name"], 3)
    blocks = gr.random_blocks(fmt, 21, K, np.random.default_rng(1))
    ours = _ext.dequantize(gr.as_quantized(fmt, blocks, K))
    theirs = gr.dequantize(fmt, blocks, K)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("f", BLOCK_FORMATS, ids=_ids(BLOCK_FORMATS))
def test_rows_of_partial_blocks_are_refused(f):
    fmt = f["name"]
    kk = f["k_align"]
    with pytest.raises(ValueError, match=f"{fmt}.*whole blocks of {kk}"):
        _ext.quantize(fmt, np.zeros((16, kk + 16), np.float32))
    blocks = gr.random_blocks(fmt, 16, kk, np.random.default_rng(0))
    with pytest.raises(ValueError, match="whole blocks"):
        _ext.dequantize({"format": fmt, "N": 16, "K": kk + 16, "blocks": blocks})


@pytest.mark.parametrize("f", GGUF_FORMATS, ids=_ids(GGUF_FORMATS))
@pytest.mark.parametrize("n0,n1,b0,b1", [(0, 37, 0, 3), (16, 33, 1, 3), (5, 6, 2, 3)])
def test_pack_is_the_reference_packers(f, n0, n1, b0, b1):
    fmt = f["name"]
    K = _k_of(fmt, 3)
    kstep = K // 3
    blocks = gr.random_blocks(fmt, 37, K, np.random.default_rng(2))
    ours = _ext.pack(gr.as_quantized(fmt, blocks, K), n0, n1, b0 * kstep, b1 * kstep)
    np.testing.assert_array_equal(ours, gr.pack(fmt, blocks, n0, n1, b0 * kstep, b1 * kstep))


@pytest.mark.parametrize("f", GGUF_FORMATS, ids=_ids(GGUF_FORMATS))
def test_quantizer_error_within_bound(f):
    """Our quantizer (the gguf package has none for most types), measured through gguf's
    dequantizer: ||W x - deq(W) x|| / ||W x|| on Gaussian W [256, 2048] within weight_rel_err."""
    fmt = f["name"]
    rng = np.random.default_rng(3)
    W = rng.standard_normal((256, 2048)).astype(np.float32)
    x = rng.standard_normal((2048, 8)).astype(np.float64)
    q = _ext.quantize(fmt, W)
    stored = q["blocks"] if "blocks" in q else q["values"].view(np.uint8).reshape(256, -1)
    deq = gr.dequantize(fmt, stored, 2048).astype(np.float64)
    err = np.linalg.norm(W @ x - deq @ x) / np.linalg.norm(W @ x)
    assert err <= f["weight_rel_err"], f"{fmt}: quantizer error {err:.4%} > bound {f['weight_rel_err']:.4%}"


def _acts(fmt: str, x: np.ndarray) -> np.ndarray:
    """x as the kernels of `fmt` see it (their activation format's rounding), float64."""
    return reference.round_activation(x, _record(fmt)["acts"][0]).astype(np.float64)


def _sum_bound(K: int, a: np.ndarray, W: np.ndarray) -> np.ndarray:
    """|fl(sum) - sum| <= gamma_n * sum |terms| for n roundings in sequence (n = K and a few for
    the scales): the fp32 bound of each a @ W^T element."""
    n = K + 8
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    return gamma * (np.abs(a) @ np.abs(W).T) + 1e-30


@pytest.mark.parametrize("fmt,row", RUNNABLE_ROWS, ids=[r for _, r in RUNNABLE_ROWS])
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_down_kernel_within_fp32_bound(fmt, row, m):
    rng = np.random.default_rng(4)
    K = _k_of(fmt, 3)
    blocks = gr.random_blocks(fmt, 40, K, rng)
    W = gr.dequantize(fmt, blocks, K).astype(np.float64)
    h = rng.standard_normal((m, K)).astype(np.float32)
    weight = rng.uniform(0.1, 1, m).astype(np.float32)
    tok = (np.arange(m) % 3).astype(np.int32)
    out = _ext.kernel_down(row, gr.as_quantized(fmt, blocks, K), h, tok, weight, np.zeros((3, 48), np.float32))
    a = _acts(fmt, h)
    ref = np.zeros((3, 48))
    bound = np.zeros((3, 48))
    for i in range(m):
        ref[tok[i], :40] += weight[i] * (a[i] @ W.T)
        bound[tok[i], :40] += weight[i] * _sum_bound(K, a[i:i + 1], W)[0] + 2.0**-24 * np.abs(ref[tok[i], :40])
    err = np.abs(out - ref)
    assert (err <= bound).all(), f"{row}: worst error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"
    assert np.abs(out[:, 40:]).max() == 0, "padded channels must stay zero"


@pytest.mark.parametrize("fmt,row", RUNNABLE_ROWS, ids=[r for _, r in RUNNABLE_ROWS])
@pytest.mark.parametrize("m", [1, 2, 3, 6])
def test_gateup_kernel_within_fp32_bound(fmt, row, m):
    rng = np.random.default_rng(5)
    K = _k_of(fmt, 2)
    gb, ub = gr.random_blocks(fmt, 24, K, rng), gr.random_blocks(fmt, 24, K, rng)
    G, U = (gr.dequantize(fmt, b, K).astype(np.float64) for b in (gb, ub))
    x = rng.standard_normal((7, K)).astype(np.float32)
    rows = rng.integers(0, 7, m).astype(np.int32)
    h = _ext.kernel_gateup(row, gr.as_quantized(fmt, gb, K), gr.as_quantized(fmt, ub, K), x, rows)
    a = _acts(fmt, x)[rows]
    g, u = a @ G.T, a @ U.T
    silu = g * 0.5 * (1 + np.tanh(0.5 * g))  # g sigmoid(g); exp(-g) overflows for g < -709 (q6_K: |g| ~ 1e3)
    ref = silu * u
    # |d silu / dg| <= 1.1; h = silu(g) u: errors of g and u carry through u and silu(g)
    dg, du = _sum_bound(K, a, G), _sum_bound(K, a, U)
    bound = 1.1 * dg * (np.abs(u) + du) + np.abs(silu) * du + 4 * 2.0**-24 * np.abs(ref) + 1e-30
    err = np.abs(h[:, :24] - ref)
    assert (err <= bound).all(), f"{row}: worst error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"


EXACT_ROWS = [(fmt, row) for fmt, row in RUNNABLE_ROWS if fmt in _ids(BLOCK_FORMATS)]


@pytest.mark.parametrize("fmt,row", EXACT_ROWS, ids=[r for _, r in EXACT_ROWS])
def test_down_kernel_bit_exact_where_the_arithmetic_is(fmt, row):
    """Power-of-two block scales and integer activations with |x| = 127 in every activation
    block (so the activation scale is 1 and q = x): every product and partial sum is exact in
    fp32, so the kernel must give the exact dot products."""
    rng = np.random.default_rng(6)
    K = _k_of(fmt, 3)
    blocks = gr.random_blocks(fmt, 32, K, rng, exact=True)
    W = gr.dequantize(fmt, blocks, K).astype(np.float64)
    ab = reference.ACT_BLOCK[_record(fmt)["acts"][0]]
    h = rng.integers(-7, 8, (4, K)).astype(np.float32)
    h[:, ::ab] = rng.choice([-127, 127], (4, K // ab))
    out = _ext.kernel_down(row, gr.as_quantized(fmt, blocks, K), h, np.arange(4, dtype=np.int32),
                           np.ones(4, np.float32), np.zeros((4, 32), np.float32))
    exact = h.astype(np.float64) @ W.T
    assert np.abs(exact).max() < 2**24 * 2.0**-7, "the test's data must keep the sums exact"
    np.testing.assert_array_equal(out, exact)


# The types the gguf package quantizes itself (gguf.quants.quantize): our quantizers write its
# blocks, so that a file we write is the file it would write.
GGUF_QUANTIZED = [f for f in ("q4_0", "q4_1", "q5_0", "q5_1") if f in _ids(BLOCK_FORMATS)]


@pytest.mark.parametrize("fmt", GGUF_QUANTIZED)
def test_quantizer_is_ggufs_bit_for_bit(fmt):
    rng = np.random.default_rng(8)
    # rows of Gaussians from fp16-subnormal to large scales, and the rows of the edge cases
    W = rng.standard_normal((40, 1024)) * 10.0 ** rng.uniform(-6, 3.5, (40, 1))
    W[0] = 0                                          # d = 0 (and 1 / d taken as 0)
    W[1] = 0.75                                       # constant: max - min = 0
    W[2] = np.abs(W[2])                               # one sign: the extreme is the largest
    W[3] = -np.abs(W[3])
    W[4, ::2] = -W[4, 1::2]                           # ties of |w|: the first one is the extreme
    W[5] = np.round(W[5] * 8) / 8                     # weights on the levels (rounding ties)
    W = W.astype(np.float32)
    ours = _ext.quantize(fmt, W)["blocks"]
    theirs = gguf.quants.quantize(W, gr.GGML_TYPES[fmt])
    bad = np.nonzero((ours != theirs).any(axis=1))[0]
    assert bad.size == 0, f"{fmt}: rows {bad[:5]} differ from gguf.quants.quantize's blocks"


@pytest.mark.parametrize("fmt", [f for f in ("iq4_nl",) if f in _ids(BLOCK_FORMATS)])
def test_iq4_nl_quantizer_takes_the_nearest_level_of_its_scale(fmt):
    """Whatever d the search settles on, each weight takes the level nearest w / d."""
    W = np.random.default_rng(9).standard_normal((16, 1024)).astype(np.float32)
    blocks = _ext.quantize(fmt, W)["blocks"].reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
    levels = np.array(gguf.quants.IQ4_NL.kvalues, np.float64)
    deq = gr.dequantize(fmt, blocks, 32).astype(np.float64)
    err = np.abs(deq - W.reshape(-1, 32))
    best = np.abs(d[:, :, None] * levels - W.reshape(-1, 32, 1)).min(axis=2)
    assert (err <= best * (1 + 1e-6) + 1e-12).all()
