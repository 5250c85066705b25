"""Weight formats: quantizers, dequantizers, packed layouts and activation rounding, each checked
against tests/reference.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kt_kernel
from kt_kernel import _ext
from kt_kernel.formats import formats as method_formats

import reference
from format_expectations import ACT_ATOL, RECORD_FIELDS
from kt_kernel.checkpoint import layout

# N and K that are and are not multiples of 16 / 32, a single element, an odd number of groups
SHAPES = [(16, 32), (32, 64), (48, 160), (40, 72), (33, 100), (7, 5), (1, 1), (17, 33)]


def _ids(shapes):
    return [f"N{n}xK{k}" for n, k in shapes]


def _weights(N: int, K: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, K)).astype(np.float32)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ---- format records -----------------------------------------------------------------------

ARRAY_FIELDS = {"name": str, "part": str, "dtype": str, "numpy": str, "file_bits": int, "per": str}


def test_record_has_every_field(fmt):
    """Every field that the converter, the loaders, doctor, the tests and the benchmarks read."""
    for field, kind in RECORD_FIELDS.items():
        assert field in fmt, f"format {fmt.get('name')!r} has no field {field!r}"
        assert isinstance(fmt[field], kind), f"{fmt['name']}.{field} = {fmt[field]!r} is not a {kind.__name__}"
    assert fmt["arrays"] and fmt["arrays"][0]["name"] == "values", f"{fmt['name']}: arrays start with the values"
    for a in fmt["arrays"]:
        for field, kind in ARRAY_FIELDS.items():
            assert isinstance(a.get(field), kind), f"{fmt['name']} array {a.get('name')!r}: {field} = {a.get(field)!r}"
        assert a["per"] in ("value", "row", "group"), a
        bits = 8 * np.dtype(a["numpy"]).itemsize
        assert a["file_bits"] in (4, bits) and (a["file_bits"] == bits or a["dtype"] == "U8"), a
    assert len({a["part"] for a in fmt["arrays"]}) == len(fmt["arrays"]), f"{fmt['name']}: converted parts repeat"
    assert (fmt["group"] > 0) == any(a["per"] == "group" for a in fmt["arrays"]), fmt["name"]
    assert fmt["acts"] and set(fmt["acts"]) <= set(ACT_ATOL), f"{fmt['name']} acts {fmt['acts']}"
    assert 0 < fmt["weight_rel_err"] <= fmt["layer_rel_err"] < 1, fmt["name"]
    assert set(fmt["agreement"]) == {"kl_mean", "top1", "tie_margin"}
    assert fmt["agreement"]["kl_mean"] > 0 and 0 < fmt["agreement"]["top1"] <= 1 and fmt["agreement"]["tie_margin"] > 0
    assert fmt["kernels"] and fmt["kernels"][-1].endswith("__ref"), f"{fmt['name']}: no generic kernel last"


def test_record_names_are_unique():
    for field in ("name", "method", "quant_method"):
        values = [f[field] for f in method_formats()]
        assert len(set(values)) == len(values), f"repeated {field}: {values}"


def test_record_acts_are_its_kernels_acts(fmt):
    rows = [r for r in _ext.kernel_table() + _ext.emulated_kernel_table() if r["format"] == fmt["name"]]
    assert {r["act"] for r in rows} == set(fmt["acts"])
    assert [r["name"] for r in _ext.kernel_table() if r["format"] == fmt["name"]] == fmt["kernels"]


def test_record_geometry_is_the_packed_layout(fmt):
    """panel bytes = Kp / k_align blocks of block_bytes, then the tail; bits per weight from the block."""
    N, K = 33, 100
    q = _ext.quantize(fmt["name"], _weights(N, K))
    kp = reference.round_up(K, fmt["k_align"])
    panel = kp // fmt["k_align"] * fmt["block_bytes"] + fmt["panel_tail_bytes"]
    assert reference.pack(q, 0, N, 0, K).size == -(-N // 16) * panel
    assert fmt["bits_per_weight"] == fmt["block_bytes"] * 8 / (16 * fmt["k_align"])


def test_record_arrays_are_what_quantize_and_the_converter_store(fmt):
    N, K = 33, 101
    q = _ext.quantize(fmt["name"], _weights(N, K))
    assert set(q) == {"format", "N", "K"} | {a["name"] for a in fmt["arrays"]}
    spec = layout.layer_arrays_spec(fmt["name"], fmt["group"], 1, N, K)  # down: [E=1, H=N, I=K]
    for a in fmt["arrays"]:
        v = q[a["name"]]
        assert v.dtype == np.dtype(a["numpy"]), f"{fmt['name']} {a['name']}: {v.dtype}"
        dtype, npt, shape = spec[("down", a["part"])]
        assert (dtype, layout.to_file_array(v, a["file_bits"]).shape) == (a["dtype"], shape[1:]), a


# ---- quantize / dequantize ----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
def test_reference_dequantizer_matches_package(fmt, shape):
    q = _ext.quantize(fmt["name"], _weights(*shape))
    ours, theirs = reference.dequantize(q), np.asarray(_ext.dequantize(q))
    assert ours.shape == theirs.shape == shape
    mismatch = np.nonzero(_bits(ours) != _bits(theirs))
    assert mismatch[0].size == 0, (
        f"{fmt['name']}: {mismatch[0].size} elements differ, first at {mismatch[0][0], mismatch[1][0]}: "
        f"reference {ours[mismatch][0]!r} vs _ext.dequantize {theirs[mismatch][0]!r}")


def test_logical_arrays_have_documented_shapes(fmt):
    N, K = 33, 100
    q = _ext.quantize(fmt["name"], _weights(N, K))
    assert (q["format"], q["N"], q["K"]) == (fmt["name"], N, K)
    assert q["values"].shape == (N, K)
    if fmt["name"] == "int8_pc":
        assert q["values"].dtype == np.int8 and q["scale"].shape == (N,) and q["scale"].dtype == np.float32
    elif fmt["name"] == "int4_g32":
        groups = -(-K // 32)
        assert q["values"].dtype == np.uint8 and int(q["values"].max()) <= 15
        assert q["group_scale"].shape == q["group_min"].shape == (N, groups)
        assert q["group_scale"].dtype == q["group_min"].dtype == np.uint16
    elif fmt["name"] == "int4_g32_zp":
        groups = -(-K // 32)
        assert q["values"].dtype == q["group_zero"].dtype == np.uint8
        assert int(q["values"].max()) <= 15 and int(q["group_zero"].max()) <= 15
        assert q["group_scale"].shape == q["group_zero"].shape == (N, groups) and q["group_scale"].dtype == np.uint16
    elif fmt["name"] == "fp8_g128":
        assert q["values"].dtype == np.uint8 and not np.any((q["values"] & 0x7F) == 0x7F)  # no NaN code
        assert q["scale"].shape == (N, -(-K // 128)) and q["scale"].dtype == np.float32
    else:
        assert q["values"].dtype == np.uint16


def test_weight_error_of_matvec_within_bound(fmt, tol):
    """||W x - deq(W) x|| / ||W x|| for Gaussian W [256, 2048] is below the format's bound."""
    w = _weights(256, 2048, seed=1)
    x = np.random.default_rng(2).standard_normal(2048)
    deq = reference.dequantize(_ext.quantize(fmt["name"], w)).astype(np.float64)
    y = w.astype(np.float64) @ x
    rel = np.linalg.norm(y - deq @ x) / np.linalg.norm(y)
    assert rel <= tol.weight_rel, f"{fmt['name']}: relative error {rel:.4f} > {tol.weight_rel}"


def test_bf16_is_round_to_nearest_even():
    specials = np.array([
        0.0, -0.0, 1.0, -1.0, np.inf, -np.inf,
        1.0 + 2.0**-8,                 # tie, even neighbour below: rounds down
        1.0 + 3 * 2.0**-8,             # tie, odd below: rounds up
        -(1.0 + 3 * 2.0**-8),
        1.0 + 2.0**-8 + 2.0**-20,      # just above a tie: up
        np.finfo(np.float32).max,      # rounds to inf under RNE
        np.finfo(np.float32).tiny, 1e-40, -3e-42,  # normal minimum and subnormals
        3.0e38, 65504.0, 0.1, 1 / 3,
    ], dtype=np.float32)
    w = np.concatenate([specials, _weights(1, 4000).ravel() * np.float32(1e3)]).reshape(1, -1)
    got = np.asarray(_ext.quantize("bf16", w)["values"]).ravel()
    want = reference.f32_to_bf16_bits(w).ravel()
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (f"bf16 bits differ at {bad[:5]}: inputs {w.ravel()[bad[:5]]}, "
                           f"got {got[bad[:5]]}, want {want[bad[:5]]}")
    # the reference itself agrees with torch's round-to-nearest-even conversion
    torch_bits = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).ravel()
    np.testing.assert_array_equal(want, torch_bits)


def test_bf16_nan_stays_nan():
    w = np.array([[np.nan, -np.nan, 1.0]], dtype=np.float32)
    deq = reference.dequantize(_ext.quantize("bf16", w))
    assert np.isnan(deq[0, :2]).all() and deq[0, 2] == 1.0


@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
def test_int8_pc_is_symmetric_rounding_per_channel(shape):
    """scale = amax/127 (fp32), q = round_half_even(w / scale) in [-127, 127], |w - deq| <= scale/2."""
    w = _weights(*shape, seed=3)
    w[0, :] = 0.0  # an all-zero channel: scale 0, q 0
    q = _ext.quantize("int8_pc", w)
    scale, values = np.asarray(q["scale"]), np.asarray(q["values"]).astype(np.int32)
    amax = np.abs(w).max(axis=1)
    np.testing.assert_array_equal(_bits(scale), _bits(amax / np.float32(127)))
    assert values.min() >= -127 and values.max() <= 127, "int8_pc must never produce -128"
    assert (values[0] == 0).all() and scale[0] == 0.0
    inv = np.where(scale > 0, np.float32(1) / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    np.testing.assert_array_equal(values, np.clip(np.rint(w * inv[:, None]), -127, 127))
    err = np.abs(w.astype(np.float64) - reference.dequantize(q))
    # plus the fp32 rounding of the scale and of the product: a few ulp of w
    bound = scale.astype(np.float64)[:, None] / 2 + 2 * np.finfo(np.float32).eps * np.abs(w)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"int8_pc error {err[worst]} exceeds scale/2 = {bound[worst]} at {worst}"


def test_int4_g32_beats_min_max_rounding():
    """The least-squares refit must do better than plain min/max rounding (d = (max-min)/15 and
    m = min in fp16, q = round((w - m)/d))."""
    N, K = 256, 2048
    w = _weights(N, K, seed=1)
    x = np.random.default_rng(2).standard_normal(K)
    deq = reference.dequantize(_ext.quantize("int4_g32", w)).astype(np.float64)
    g = w.reshape(N, K // 32, 32)
    lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16).astype(np.float32)
    m = lo.astype(np.float16).astype(np.float32)
    minmax = (d * np.clip(np.rint((g - m) / d), 0, 15) + m).reshape(N, K).astype(np.float64)
    y = w.astype(np.float64) @ x
    rel = np.linalg.norm(y - deq @ x) / np.linalg.norm(y)
    rel_minmax = np.linalg.norm(y - minmax @ x) / np.linalg.norm(y)
    assert rel < rel_minmax, f"int4_g32 relative error {rel:.4f} is not below min/max rounding's {rel_minmax:.4f}"


@pytest.mark.parametrize("K", [5, 32, 40, 100], ids=lambda k: f"K{k}")
def test_int4_g32_groups_are_fitted_on_their_own_values(K):
    """Each group of 32 k (and the partial last group of a K that is not a multiple of 32) is
    quantized exactly as that group alone would be: no padding or neighbour enters its fit."""
    w = _weights(4, K, seed=4)
    full = _ext.quantize("int4_g32", w)
    for g in range(-(-K // 32)):
        alone = _ext.quantize("int4_g32", np.ascontiguousarray(w[:, 32 * g : 32 * (g + 1)]))
        np.testing.assert_array_equal(full["values"][:, 32 * g : 32 * (g + 1)], alone["values"])
        np.testing.assert_array_equal(full["group_scale"][:, g], alone["group_scale"][:, 0])
        np.testing.assert_array_equal(full["group_min"][:, g], alone["group_min"][:, 0])


def test_int4_g32_constant_group_is_exact_in_fp16():
    w = np.full((2, 40), 0.5, dtype=np.float32)
    w[1] = 0.0
    q = _ext.quantize("int4_g32", w)
    np.testing.assert_array_equal(reference.dequantize(q), w)


def test_fp8_g128_rounds_as_torch_float8_e4m3fn():
    """Q = e4m3 of W / S, S = amax / 448 per channel and group of 128 k: the bytes torch's
    float8_e4m3fn cast gives (nearest, ties to even), subnormals and exact zeros included."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((24, 300)) * np.exp(rng.uniform(-12, 2, (24, 1)))).astype(np.float32)
    w[0, :128] = 0.0  # an all-zero group: S = 0, Q = 0
    w[1, 5] = 1e-9    # subnormal and zero codes beside the group's amax
    q = _ext.quantize("fp8_g128", w)
    amax = np.abs(np.pad(w, ((0, 0), (0, 84)))).reshape(24, 3, 128).max(axis=2)
    np.testing.assert_array_equal(q["scale"], amax / np.float32(448))
    s = np.repeat(q["scale"], 128, axis=1)[:, :300]
    want = (torch.from_numpy(w) / torch.from_numpy(np.where(s > 0, s, 1))).to(torch.float8_e4m3fn)
    np.testing.assert_array_equal(q["values"], want.view(torch.uint8).numpy())
    assert q["values"].max() != 0 and 0x7E in (q["values"] & 0x7F)  # amax maps to 448


def test_fp8_g128_decodes_every_byte_as_torch():
    """Every e4m3 byte dequantizes to torch's float8_e4m3fn value (0x7f and 0xff: NaN)."""
    b = np.arange(256, dtype=np.uint8)
    q = {"format": "fp8_g128", "N": 1, "K": 256, "values": b[None].copy(), "scale": np.ones((1, 2), np.float32)}
    got = _ext.dequantize(q)[0]
    want = torch.from_numpy(b).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(got, want)  # NaN equals NaN here


# ---- packed layouts -----------------------------------------------------------------------


def _slices(fmt: dict, N: int, K: int):
    """Full matrix; rows [16, N) (the gate/up slice of a second sub-pool); columns [unit, K)
    (the down slice of a second sub-pool: k0 a multiple of the format's sub-pool unit); both;
    an interior column window ending before K."""
    unit = max(16, fmt["group"] or fmt["k_align"])
    out = [("full", 0, N, 0, K)]
    if N > 16:
        out.append(("rows16:", 16, N, 0, K))
    if K > unit:
        out.append((f"cols{unit}:", 0, N, unit, K))
        out.append((f"rows3:cols{unit}:", min(3, N), N, unit, K))
        if K > unit + 5:
            out.append((f"cols{unit}:{K - 5}", 0, N, unit, K - 5))
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
def test_packer_is_bit_exact(fmt, shape):
    N, K = shape
    q = _ext.quantize(fmt["name"], _weights(N, K, seed=5))
    for name, n0, n1, k0, k1 in _slices(fmt, N, K):
        got = np.asarray(_ext.pack(q, n0, n1, k0, k1))
        want = reference.pack(q, n0, n1, k0, k1)
        assert got.shape == want.shape, f"{fmt['name']} {name}: {got.size} bytes packed, reference {want.size}"
        diff = np.nonzero(got != want)[0]
        assert diff.size == 0, (
            f"{fmt['name']} N={N} K={K} slice {name} (n0={n0} n1={n1} k0={k0} k1={k1}): {diff.size} bytes "
            f"differ, first at byte {diff[0]}: got {got[diff[0]]}, want {want[diff[0]]}")


def test_pack_rejects_unaligned_column_start(fmt):
    align = fmt["group"] or fmt["k_align"]
    q = _ext.quantize(fmt["name"], _weights(16, max(64, 2 * align)))  # k0 = align + 1 inside K
    with pytest.raises(ValueError, match="k0"):
        _ext.pack(q, 0, 16, align + 1 if align > 1 else 1, q["K"])


# ---- activation rounding ------------------------------------------------------------------


ACT_KS = [1, 31, 32, 72, 100, 2048]


def _activation_rows(K: int) -> np.ndarray:
    rng = np.random.default_rng(K)
    x = rng.standard_normal((9, K)).astype(np.float32) * np.float32(3.0)
    x[1] = 0.0                                    # all-zero row: scale 0
    x[2, 0] = 63.5                                # 127/amax = 2 exactly: x = 0.25 j lands on
    x[2, 1:] = (0.25 * np.arange(1, K)) % 5       # ties 0.5, 1.5, ... (half to even: 0, 2, ...)
    x[3] *= np.float32(1e4)
    x[4] *= np.float32(1e-39)                     # subnormal row: 127/amax overflows, q = x / s
    x[5] = np.where(np.arange(K) % 2, -0.0, 0.0)  # signed zeros
    # bf16 ties: the low 16 bits are 0x8000 (even and odd high halves), and just either side
    x[6] = (rng.integers(0x3F80, 0x4100, K).astype(np.uint32) << 16 | 0x8000).view(np.float32)
    x[7] = (rng.integers(0x3F80, 0x4100, K).astype(np.uint32) << 16 | 0x7FFF).view(np.float32)
    x[8, K - 1] = np.float32(3.0e38)              # the largest |x| is the last value (a tail lane)
    return x


@pytest.mark.parametrize("act", ["f32", "bf16", "q8s", "q8u"])
@pytest.mark.parametrize("K", ACT_KS, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("align", [2, 4, 32], ids=lambda a: f"Kp{a}")
def test_activation_rounding_matches_reference(act, K, align, tier):
    """Every tier's activation codec equals the reference emulation of the kernels' input
    rounding, byte for byte, padding and group sums included (Kp: the k_align of bf16, int8_pc
    and int4_g32)."""
    assert _ext.act_codec() == {"generic": "act_ref", "avx2": "act_8__avx2"}.get(tier, "act_16__avx512")
    x = _activation_rows(K)
    Kp = reference.round_up(K, align)
    data, scale, gsum = (np.asarray(a) for a in _ext.quantize_activation(act, x, Kp))
    rows = x.shape[0]
    if act == "f32":
        got = data.view(np.float32)
        np.testing.assert_array_equal(got[:, :K], reference.round_activation(x, "f32"))
        assert (got[:, K:] == 0).all()
    elif act == "bf16":
        got = data.view(np.uint16)
        np.testing.assert_array_equal(got[:, :K], reference.f32_to_bf16_bits(x))
        assert (got[:, K:] == 0).all()
    else:
        q, s = reference.quantize_q8(x)
        np.testing.assert_array_equal(_bits(scale), _bits(s))
        qi = data.view(np.int8) if act == "q8s" else (data.astype(np.int16) - 128).astype(np.int8)
        np.testing.assert_array_equal(qi[:, :K], q)
        assert (qi[:, K:] == 0).all()
        if act == "q8s":
            full = Kp // 32 * 32
            want = np.pad(q.astype(np.int32), ((0, 0), (0, Kp - K)))[:, :full].reshape(rows, Kp // 32, 32).sum(-1)
            np.testing.assert_array_equal(gsum[:, : Kp // 32], want)


# The GGUF kernels' activation blocks as bytes (kt/gguf_blocks.h): q8_32 is 32 int8, fp32 d, int32
# sum; q8_256 is 256 int8, 16 int16 sums of 16 q, fp32 d, 28 zero bytes.
ACT_BLOCK_DTYPE = {
    "q8_32": np.dtype([("q", np.int8, 32), ("d", "<u4"), ("sum", "<i4")]),
    "q8_256": np.dtype([("q", np.int8, 256), ("bsums", "<i2", 16), ("d", "<u4"), ("pad", np.uint8, 28)]),
}


@pytest.mark.parametrize("act", ["q8_32", "q8_256"])
@pytest.mark.parametrize("K", [1, 31, 32, 72, 100, 256, 300, 2048], ids=lambda k: f"K{k}")
def test_activation_blocks_match_reference(act, K, tier):
    """Every tier's GGUF activation blocks equal the q8 rule applied to each block on its own
    (reference.quantize_q8 on the row cut into blocks, zeros past K), byte for byte: q, the scale's
    bits, the sums and the padding."""
    n = reference.ACT_BLOCK[act]
    x = _activation_rows(K)
    ties = ((0.25 * np.arange(K)) % 5).astype(np.float32)
    ties[::n] = 63.5  # 127/amax = 2 in every block: x = 0.25 j lands on ties, rounded to even
    x = np.vstack([x, ties])
    Kp = reference.round_up(K, n)
    data, _, _ = (np.asarray(a) for a in _ext.quantize_activation(act, x, Kp))
    got = data.reshape(-1).view(ACT_BLOCK_DTYPE[act]).reshape(x.shape[0], Kp // n)
    blocks = np.pad(x, ((0, 0), (0, Kp - K))).reshape(-1, n)
    q, s = reference.quantize_q8(blocks)
    q, s = q.reshape(got.shape + (n,)), s.reshape(got.shape)
    np.testing.assert_array_equal(got["q"], q)
    np.testing.assert_array_equal(got["d"], _bits(s))
    if act == "q8_32":
        np.testing.assert_array_equal(got["sum"], q.astype(np.int32).sum(-1))
    else:
        np.testing.assert_array_equal(got["bsums"], q.astype(np.int32).reshape(got.shape + (16, 16)).sum(-1))
        assert (got["pad"] == 0).all()


@pytest.mark.parametrize("act", ["f32", "bf16", "q8s", "q8u"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("at", [0, 16, 70], ids=lambda i: f"at{i}")
def test_activation_codec_refuses_non_finite_rows(act, bad, at, tier):
    x = np.ones((3, 71), np.float32)
    x[1, at] = bad
    with pytest.raises(ValueError, match="row 1 holds NaN or Inf"):
        _ext.quantize_activation(act, x, 72)


def _special_floats() -> np.ndarray:
    """Every bf16 high half with low halves that round down, tie and round up, plus NaNs."""
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    return (hi[:, None] | low[None, :]).ravel().view(np.float32)


def test_round_activation_bf16_matches_reference(tier):
    """The fp32 -> bf16 rounding of the layer's output, on every high half: ties to even,
    overflow to Inf, NaN stays NaN with the quiet bit set. Odd lengths exercise the tails."""
    x = _special_floats()
    for n in (x.size, 1, 15, 17, 33):
        got = np.asarray(_ext.round_activation_bf16(x[:n]))
        np.testing.assert_array_equal(got, reference.f32_to_bf16_bits(x[:n]))


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_widen_activation_matches_reference(dtype, tier):
    """bf16 and f16 inputs to fp32, every one of the 65536 bit patterns (f16 subnormals too).
    NaN in, NaN out (a signalling f16 NaN may come back quiet; such rows are refused anyway)."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    for n in (bits.size, 1, 7, 9, 17):
        got = np.asarray(_ext.widen_activation(bits[:n], dtype))
        want = reference.bf16_bits_to_f32(bits[:n]) if dtype == "bf16" else reference.f16_bits_to_f32(bits[:n])
        nan = np.isnan(want)
        assert (np.isnan(got) == nan).all()
        np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("amax", [1e-38, 1e-39, 1e-30, 1.0, 1e30], ids=lambda a: f"amax{a:g}")
def test_q8_activation_error_bound_at_any_scale(amax):
    """|x - s q| <= s/2 with s = amax/127 must hold for rows of any finite magnitude. For tiny rows
    127/amax overflows fp32 (amax < ~3.7e-37), so q = round(x * (127/amax)) is not computable as
    written; the scale is still positive and the bound still applies."""
    x = np.array([[1.0, -0.5, 0.25, 0.0, -1.0, 0.7]], dtype=np.float32) * np.float32(amax)
    data, scale, _ = (np.asarray(a) for a in _ext.quantize_activation("q8s", x, 32))
    q = data.view(np.int8)[0, :6].astype(np.float64)
    s = float(scale[0])
    err = np.abs(x[0].astype(np.float64) - s * q)
    # plus fp32 rounding: of x / s (a few ulp of x) and of s itself (subnormal: 2^-149 per unit of q)
    bound = s / 2 + 2 * np.finfo(np.float32).eps * np.abs(x[0]) + 128 * 2.0**-149
    assert (err <= bound).all(), (
        f"amax={amax}: q = {q.tolist()}, s = {s!r}; |x - s q| = {err.tolist()} exceeds s/2 = {s / 2!r}")


# ---- ISA quantizers -----------------------------------------------------------------------
#
# Every tier's quantizer must reproduce the format's reference quantizer (the generic tier's)
# bit for bit: values, scales, fp16 d and m, for any input, NaN and Inf included. The rows below
# are stacked into one matrix so that the vector quantizers see mixed blocks of groups (constant
# groups next to refitted ones, NaN next to normal) and the row count is not a multiple of 8 or 16.

QUANT_KS = [32, 64, 33, 31, 1, 100, 2048]


def _quantizer_rows(K: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    k = np.arange(K)
    g = k // 32  # group index of each k
    normal = lambda: rng.standard_normal(K)  # noqa: E731
    rows = [("normal", normal()), ("normal", normal()), ("t3", rng.standard_t(3, K)),
            ("t1", rng.standard_t(1, K)), ("zero", np.zeros(K)), ("constant", np.full(K, 0.37)),
            ("signed_zeros", np.where(rng.random(K) < 0.5, -0.0, 0.0)),
            ("constant_groups", np.where(g % 2 == 0, 1.5 + g, normal())),
            ("two_values", np.where(rng.random(K) < 0.5, -0.75, 2.0)),
            ("outlier", normal() * np.where(k % 32 == 7, 100.0, 1.0)),
            ("offset", 1000.0 + normal() * 1e-3),  # shrunk ranges: all q clamp to 15, det = 0
            ("offset_neg", -5e4 + normal() * 10.0),
            ("ulp_range", 1.0 + rng.integers(0, 4, K) * 2.0**-23),
            ("ramp", (k % 32) * 0.1 - 1.55),  # q land on exact ties of round-half-even
            ("half_steps", np.where(k == 0, 127.0, (k % 64 - 32) * 0.5)),  # int8: inv = 1, ties
            ("uniform", rng.random(K)), ("grid", rng.integers(-16, 17, K) / 8.0),
            ("bf16_values", (normal().astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32))]
    # Small integers make the sums exact and the fits land on fp16 ties often: there a one-ulp
    # difference anywhere in the fit changes the result (about 7% of the groups differ).
    rows += [("small_ints", rng.integers(0, 5, K).astype(np.float64)) for _ in range(4)]
    for scale in [1e4, 3e4, 6.5e4, 1e5, 3e5, 1e30, 3e38]:  # d and m round to fp16 overflow / inf
        rows.append((f"scale{scale:g}", normal() * scale))
    for scale in [1e-5, 1e-7, 3e-8, 1e-9, 1e-38, 1e-42]:  # fp16 subnormal / zero d, fp32 denormals
        rows.append((f"scale{scale:g}", normal() * scale))
    # m exactly at fp16 rounding edges: 65504 is the largest fp16, 65520 rounds to infinity
    for lo in [65504.0, 65519.99, 65520.0, -65520.0, 2.0**-24, 2.0**-25, 1.0 + 2.0**-11]:
        rows.append((f"lo{lo:g}", lo + np.abs(normal()) * abs(lo) * 0.01))
    nan_first = normal()
    nan_first[k % 32 == 0] = np.nan
    nan_mid, neg_nan, pos_inf, both_inf, inf_nan = (normal() for _ in range(5))
    nan_mid[k % 32 == 5] = np.nan
    nan_mid[k % 32 == 31] = np.nan  # last in its group, and in the row when K is a multiple of 32
    nan_mid[K - 1] = np.nan
    nan_after_max = normal()  # the row's largest |w| 16 k before a NaN: same lane of 8 or 16
    nan_after_max[max(K - 17, 0)] = -50.0
    nan_after_max[K - 1] = np.nan
    neg_nan[k % 32 == 3] = -np.nan
    neg_nan[k % 32 == 0] = -np.nan
    pos_inf[k % 32 == 9] = np.inf
    both_inf[k % 32 == 0] = -np.inf
    both_inf[k % 32 == 1] = np.inf
    inf_nan[k % 32 == 2] = np.inf
    inf_nan[k % 32 == 4] = np.nan
    # NaN payloads: the reference writes any NaN d or m as sign | 0x7e00 (vcvtps2ph keeps payload)
    payload = normal().astype(np.float32)
    payload[k % 32 == 0] = np.array([0x7FE01234, 0xFF801000, 0x7F800001], np.uint32).view(np.float32)[g % 3][k % 32 == 0]
    rows += [("nan_payload", payload), ("nan_first", nan_first), ("nan_mid", nan_mid), ("nan_after_max", nan_after_max), ("neg_nan", neg_nan), ("inf", pos_inf),
             ("both_inf", both_inf), ("inf_nan", inf_nan), ("all_inf", np.full(K, -np.inf))]
    return rows


def _quantizer_input(K: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    with np.errstate(all="ignore"):
        rows = _quantizer_rows(K, seed)
        w = np.stack([r for _, r in rows]).astype(np.float32)
    order = np.random.default_rng(seed + 1).permutation(len(rows))
    return [rows[i][0] for i in order], np.ascontiguousarray(w[order])


def _quantizer_row(fmt_name: str, tier_name: str) -> dict:
    """The quantizer-table row for `fmt_name` on `tier_name` (first at or below it, best-first).
    The emulated AMX tier quantizes weights as the AMX tier does: with the best vector quantizer."""
    tiers = list(_ext.all_tiers())
    tier_name = "amx" if tier_name == "amx_emu" else tier_name
    for row in _ext.quantizer_table():
        if row["format"] == fmt_name and tiers.index(row["tier"]) <= tiers.index(tier_name):
            return row
    raise AssertionError(f"quantizer table has no row for {fmt_name} at or below {tier_name}")


def _reference_quantize(fmt_name: str, w: np.ndarray) -> dict:
    before = kt_kernel.cpu_info()["override"]
    kt_kernel.set_isa("generic")
    try:
        assert _ext.quantizer(fmt_name) == _quantizer_row(fmt_name, "generic")["name"]
        return _ext.quantize(fmt_name, w)
    finally:
        kt_kernel.set_isa(before or None)


def test_quantizer_table_has_a_generic_reference_row(fmt):
    row = _quantizer_row(fmt["name"], "generic")
    assert row["tier"] == "generic" and row["name"].endswith("_quantize_ref"), row


@pytest.mark.parametrize("K", QUANT_KS, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("fmt_name", [f["name"] for f in _ext.formats()
                                      if any(r["format"] == f["name"] and r["tier"] != "generic" for r in _ext.quantizer_table())])
def test_quantizer_is_bit_identical_to_reference(fmt_name, K, tier):
    names, w = _quantizer_input(K)
    want_row = _quantizer_row(fmt_name, tier)
    assert _ext.quantizer(fmt_name) == want_row["name"]
    got = _ext.quantize(fmt_name, w)
    want = _reference_quantize(fmt_name, w)
    for key in sorted(set(want) - {"format", "N", "K"}):
        a, b = np.asarray(got[key]), np.asarray(want[key])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{key}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
        bad = np.argwhere(a.view(np.uint8).reshape(a.shape[0], -1) != b.view(np.uint8).reshape(b.shape[0], -1))
        if bad.size:
            n = int(bad[0][0])
            col = int(np.nonzero(a[n].ravel() != b[n].ravel())[0][0]) if a.ndim > 1 else 0
            raise AssertionError(
                f"{want_row['name']} on tier {tier}, K={K}: {key} differs from the reference in "
                f"{len(np.unique(bad[:, 0]))} rows; first row {n} ({names[n]}) at column {col}: "
                f"got {a[n].ravel()[col]!r}, reference {b[n].ravel()[col]!r}")
