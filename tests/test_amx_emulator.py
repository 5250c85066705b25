"""The AMX tile emulator (cpp/src/kernels/amx_emu) against the Intel SDM's definitions.

Hand-computed cases come first, each from the SDM pseudocode of its instruction; then randomized
checks against the numpy/fractions implementations of the same definitions below; then the shared
tile GEMM (one template over the tile backend) on the emulator vs numpy, and on the hardware where
AMX is usable; then every fault raises ValueError and leaves the process alive.
"""
from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np
import pytest

import kt_kernel
from kt_kernel import _ext

# ---- helpers ----------------------------------------------------------------------------------


def cfg(tiles: dict, palette: int = 1, start_row: int = 0) -> bytes:
    """ldtilecfg's 64-byte operand: tiles = {index: (rows, colsb)}."""
    b = bytearray(64)
    b[0], b[1] = palette, start_row
    for t, (rows, colsb) in tiles.items():
        struct.pack_into("<H", b, 16 + 2 * t, colsb)
        b[48 + t] = rows
    return bytes(b)


def run(*program):
    return _ext.amx_emu_run(list(program))


def reg(raw: bytes) -> np.ndarray:
    """A 1 KiB tile register dump as 16 rows x 64 bytes."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(16, 64)


def tdp(op, c, a, b, dtype=np.int32):
    """Run one tdp* on C [M, N] (dwords), A [M, 4K] bytes, B [K, 4N] bytes; return (C', register)."""
    c = np.ascontiguousarray(c)
    M, N = c.shape
    K = b.shape[0]
    assert a.shape == (M, 4 * K) and b.shape == (K, 4 * N)
    out = run(("ldtilecfg", cfg({0: (M, 4 * N), 1: (M, 4 * K), 2: (K, 4 * N)})),
              ("tileloadd", 0, c.tobytes(), 4 * N),
              ("tileloadd", 1, np.ascontiguousarray(a).tobytes(), 4 * K),
              ("tileloadd", 2, np.ascontiguousarray(b).tobytes(), 4 * N),
              (op, 0, 1, 2), ("tilestored", 0, 4 * N), ("read", 0))
    return np.frombuffer(out[0], dtype=dtype).reshape(M, N), reg(out[1])


def u8(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).astype(np.uint8)  # two's complement bytes of -128..255


SIGNS = {"tdpbssd": (True, True), "tdpbsud": (True, False), "tdpbusd": (False, True), "tdpbuud": (False, False)}


def ref_tdp_int(op, c, a, b):
    """SDM: C[m][n] += sum_k DPBD(A[m].dword[k], B[k].dword[n]), int32 with wraparound."""
    sa, sb = SIGNS[op]
    M, N = c.shape
    K = b.shape[0]
    av = (a.view(np.int8) if sa else a).astype(np.int64).reshape(M, K, 4)
    bv = (b.view(np.int8) if sb else b).astype(np.int64).reshape(K, N, 4)
    s = c.astype(np.int64) + np.einsum("mkj,knj->mn", av, bv)
    return ((s + 2**31) % 2**32 - 2**31).astype(np.int32)


F32_MIN = Fraction(2) ** -126


def bf16_value(h: int) -> Fraction:
    """make_fp32 with DAZ: a bf16 is the upper half of an fp32; denormals read as 0."""
    return f32_value(h << 16)


def f32_value(bits: int) -> Fraction:
    if bits & 0x7F800000 == 0:
        return Fraction(0)  # zero or denormal (DAZ)
    return Fraction(float(np.uint32(bits).view(np.float32)))


def round_f32_ftz(x: Fraction) -> Fraction:
    """Round to nearest-even fp32 with unbounded exponent, then flush tiny results (FTZ)."""
    if x == 0:
        return x
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # 2^e <= a < 2^(e+2)
    if Fraction(2) ** (e + 1) <= a:
        e += 1
    if a < Fraction(2) ** e:
        e -= 1
    ulp = Fraction(2) ** (e - 23)
    v = round(a / ulp) * ulp  # Fraction.__round__ rounds half to even
    if v < F32_MIN:
        return Fraction(0)
    assert v < Fraction(2) ** 128, "the tests keep results finite"
    return v if x > 0 else -v


def ref_tdp_bf16(c_bits, a, b):
    """SDM TDPBF16PS: per C element, for k then for the pair element j: one fp32 FMA
    c = c + a[m][2k+j] * b[k][2n+j] with DAZ, FTZ, round to nearest even."""
    M, N = c_bits.shape
    K = b.shape[0]
    a16 = a.view(np.uint16).reshape(M, K, 2)
    b16 = b.view(np.uint16).reshape(K, N, 2)
    out = np.zeros((M, N), dtype=np.float32)
    for m in range(M):
        for n in range(N):
            acc = f32_value(int(c_bits[m, n]))
            for k in range(K):
                for j in range(2):
                    acc = round_f32_ftz(acc + bf16_value(int(a16[m, k, j])) * bf16_value(int(b16[k, n, j])))
            out[m, n] = float(acc)
    return out


def bf16_bits(x) -> np.ndarray:
    """fp32 -> bf16 bits, round to nearest even (finite inputs)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def pairs(bits: np.ndarray) -> np.ndarray:
    """[rows, 2 * cols] bf16 bits -> [rows, 4 * cols] bytes (dword = two bf16, element 0 low)."""
    return np.ascontiguousarray(bits.astype(np.uint16)).view(np.uint8)


# ---- hand-computed integer cases (SDM TDPB[SS,SU,US,UU]D) ------------------------------------

# A row [-1, -2, 3, 4] (bytes ff fe 03 04) . B column [5, 6, -7, 8] (bytes 05 06 f9 08):
#   ssd: -5 - 12 - 21 + 32 = -6
#   sud: A signed, B unsigned:    -5 - 12 + 3*249 + 32 = 762
#   usd: A unsigned, B signed:    255*5 + 254*6 - 21 + 32 = 2810
#   uud: 255*5 + 254*6 + 3*249 + 4*8 = 3578
HAND = {"tdpbssd": -6, "tdpbsud": 762, "tdpbusd": 2810, "tdpbuud": 3578}


@pytest.mark.parametrize("op", list(HAND))
def test_int_signedness_by_hand(op):
    a = u8([[-1, -2, 3, 4]])
    b = u8([[5, 6, -7, 8]])
    c, _ = tdp(op, np.array([[100]], dtype=np.int32), a, b)
    assert c[0, 0] == 100 + HAND[op]


def test_int_two_k_dwords_and_columns_by_hand():
    # M=2, K=2 dwords (8 bytes), N=2. A rows: [1..8], [-1]*8. B[k][n] dwords:
    #   k=0: n=0 [1,1,1,1]  n=1 [1,0,0,0];  k=1: n=0 [2,2,2,2]  n=1 [0,0,0,-1]
    # C[0][0] = (1+2+3+4) + 2*(5+6+7+8) = 10 + 52 = 62;  C[0][1] = 1 - 8 = -7
    # C[1][0] = -4 - 8 = -12;                            C[1][1] = -1 + 1 = 0
    a = u8([[1, 2, 3, 4, 5, 6, 7, 8], [-1] * 8])
    b = u8([[1, 1, 1, 1, 1, 0, 0, 0], [2, 2, 2, 2, 0, 0, 0, -1]])
    c, _ = tdp("tdpbssd", np.zeros((2, 2), np.int32), a, b)
    assert c.tolist() == [[62, -7], [-12, 0]]


def test_int32_accumulation_wraps_without_saturation():
    # 0x7fffffff + 1*1 wraps to -2^31 (no saturation); -2^31 + (-1)*1 wraps to 2^31 - 1.
    a = u8([[1, 0, 0, 0], [-1, 0, 0, 0]])
    b = u8([[1, 0, 0, 0]])
    c, _ = tdp("tdpbssd", np.array([[2**31 - 1], [-(2**31)]], np.int32), a, b)
    assert c[:, 0].tolist() == [-(2**31), 2**31 - 1]
    # uud: 16 dwords of 4 * 255 * 255 = 260100 each: 4161600 per row; from 2^31 - 1000 it wraps
    a = np.full((1, 64), 255, np.uint8)
    b = np.full((16, 4), 255, np.uint8)
    c, _ = tdp("tdpbuud", np.array([[2**31 - 1000]], np.int32), a, b)
    assert c[0, 0] == 2**31 - 1000 + 16 * 260100 - 2**32


def test_partial_config_zeroes_the_rest_of_c():
    # C 2 rows x 8 bytes: after tdp the register holds C in rows 0..1, bytes 0..7; all else zero
    a = u8([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = u8([[1, 1, 1, 1, 2, 0, 0, 0]])
    c, r = tdp("tdpbssd", np.array([[0, 0], [1, 1]], np.int32), a, b)
    assert c.tolist() == [[10, 2], [27, 11]]
    assert np.array_equal(r[:2, :8].copy().view(np.int32), c)
    assert not r[:2, 8:].any() and not r[2:].any()


# ---- loads, stores, zero, config -------------------------------------------------------------


def test_load_reads_rows_x_colsb_with_stride_and_zeroes_the_rest():
    # tmm0: 3 rows x 5 bytes, stride 7 over a buffer of 0..20
    buf = bytes(range(21))
    (raw,) = run(("ldtilecfg", cfg({0: (3, 5)})), ("tileloadd", 0, buf, 7), ("read", 0))
    r = reg(raw)
    assert r[:3, :5].tolist() == [[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [14, 15, 16, 17, 18]]
    assert not r[:3, 5:].any() and not r[3:].any()


STALE = bytes([0xEE]) * 1024  # written into registers with the test hook, behind ldtilecfg's back


def test_load_zeroes_stale_bytes_beyond_rows_and_colsb():
    (raw,) = run(("ldtilecfg", cfg({2: (3, 5)})), ("write", 2, STALE),
                 ("tileloadd", 2, bytes(range(15)), 5), ("read", 2))
    r = reg(raw)
    assert r[:3, :5].flatten().tolist() == list(range(15))
    assert not r[:3, 5:].any() and not r[3:].any()


@pytest.mark.parametrize("op", list(SIGNS) + ["tdpbf16ps"])
def test_tdp_zeroes_stale_bytes_beyond_c(op):
    # C 2 rows x 8 bytes over a register full of 0xee: rows 0..1 bytes 0..7 are C + A.B, the rest 0
    out = run(("ldtilecfg", cfg({0: (2, 8), 1: (2, 4), 2: (1, 8)})), ("write", 0, STALE),
              ("tileloadd", 1, bytes(8), 4), ("tileloadd", 2, bytes(8), 8), (op, 0, 1, 2), ("read", 0))
    r = reg(out[0])
    assert (r[:2, :8] == 0xEE).all()  # 0 products leave C; 0xeeeeeeee is a normal fp32, not a denormal
    assert not r[:2, 8:].any() and not r[2:].any()


def test_tilezero_and_store_around_stale_bytes():
    out = run(("ldtilecfg", cfg({1: (2, 3)})), ("write", 1, STALE), ("tilestored", 1, 4),
              ("tilezero", 1), ("read", 1))
    assert list(out[0]) == [0xEE, 0xEE, 0xEE, 0xAA, 0xEE, 0xEE, 0xEE]  # rows x colsb only
    assert not reg(out[1]).any()


def test_load_of_a_c_tile_after_tdp_clears_stale_bytes():
    # tdp writes C (2 x 8 bytes); loading C again with zeros leaves nothing from before
    a = u8([[1, 1, 1, 1], [1, 1, 1, 1]])
    b = u8([[1, 1, 1, 1, 1, 1, 1, 1]])
    out = run(("ldtilecfg", cfg({0: (2, 8), 1: (2, 4), 2: (1, 8)})),
              ("tileloadd", 1, a.tobytes(), 4), ("tileloadd", 2, b.tobytes(), 8),
              ("tdpbssd", 0, 1, 2), ("read", 0),
              ("tileloadd", 0, bytes(16), 8), ("read", 0))
    assert reg(out[0])[:2, :8].copy().view(np.int32).tolist() == [[4, 4], [4, 4]]
    assert not reg(out[1]).any()


def test_start_row_restarts_a_load_then_resets():
    # start_row = 2: the first tileloadd fills rows 2..3 only (rows 0..1 keep their contents, zero
    # after ldtilecfg); zero_tilecfg_start() makes the next load start at row 0.
    buf = bytes(range(16))
    out = run(("ldtilecfg", cfg({0: (4, 4)}, start_row=2)),
              ("tileloadd", 0, buf, 4), ("read", 0),
              ("tileloadd", 0, buf, 4), ("read", 0))
    first, second = reg(out[0]), reg(out[1])
    assert not first[:2].any() and first[2:4, :4].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert second[:4, :4].flatten().tolist() == list(range(16))


def test_store_writes_rows_x_colsb_only():
    buf = bytes(range(6))
    (mem,) = run(("ldtilecfg", cfg({3: (2, 3)})), ("tileloadd", 3, buf, 3), ("tilestored", 3, 5))
    # stride 5: bytes 3..4 between the rows are untouched (0xAA)
    assert list(mem) == [0, 1, 2, 0xAA, 0xAA, 3, 4, 5]


def test_tilezero_clears_the_whole_register():
    out = run(("ldtilecfg", cfg({5: (16, 64)})), ("tileloadd", 5, bytes([7]) * 1024, 64),
              ("tilezero", 5), ("read", 5), ("tilestored", 5, 64))
    assert not reg(out[0]).any() and not any(out[1])


def test_ldtilecfg_and_release_zero_every_register():
    out = run(("ldtilecfg", cfg({0: (16, 64)})), ("tileloadd", 0, bytes([1]) * 1024, 64),
              ("ldtilecfg", cfg({0: (16, 64)})), ("read", 0),
              ("tileloadd", 0, bytes([1]) * 1024, 64), ("tilerelease",), ("read", 0))
    assert not reg(out[0]).any() and not reg(out[1]).any()


# ---- hand-computed bf16 cases (SDM TDPBF16PS) -------------------------------------------------

ONE, TWO, HALF = 0x3F80, 0x4000, 0x3F00  # bf16 bits of 1.0, 2.0, 0.5
P2 = lambda e: (127 + e) << 7  # bf16 bits of 2^e (normal range)


def bf16_tdp(c_f32: float, a_pair, b_pair, c_bits=None):
    """One C element, one K dword: C + a0*b0 + a1*b1 (the SDM's two FMAs). Returns float32."""
    c = np.array([[c_bits if c_bits is not None else np.float32(c_f32).view(np.uint32)]], np.uint32)
    a = pairs(np.array([a_pair], np.uint16))
    b = pairs(np.array([b_pair], np.uint16))
    out, _ = tdp("tdpbf16ps", c.view(np.int32), a, b, dtype=np.float32)
    return out[0, 0]


def test_bf16_exact_sum():
    # 0.5 + 1*2 + 0.5*2 = 3.5
    assert bf16_tdp(0.5, (ONE, HALF), (TWO, TWO)) == 3.5


def test_bf16_each_product_is_rounded_into_c_in_order():
    # c = 1; + 2^-24 (a tie between 1 and 1 + 2^-23: RNE keeps 1); + 2^-24 again: 1.
    # Summing the pair first (2^-23) would give 1 + 2^-23: the SDM does two FMAs in sequence.
    assert bf16_tdp(1.0, (P2(-12), P2(-12)), (P2(-12), P2(-12))) == 1.0
    # ties go to even: 1 + 2^-23 (odd significand) + 2^-24 -> 1 + 2^-22; then + 0
    assert bf16_tdp(1.0 + 2**-23, (P2(-12), 0), (P2(-12), 0)) == np.float32(1.0 + 2**-22)
    # above the tie rounds up: 1 + 2^-12 * 1.5 * 2^-12 = 1 + 1.5 * 2^-24 -> 1 + 2^-23
    assert bf16_tdp(1.0, (P2(-12), 0), (0x3FC0 - (12 << 7), 0)) == np.float32(1.0 + 2**-23)


def test_bf16_fused_product_is_exact():
    # (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14: exact in fp32 (the product is not rounded to bf16)
    x = 0x3F81  # 1 + 2^-7
    assert bf16_tdp(0.0, (x, 0), (x, 0)) == np.float32(1 + 2**-6 + 2**-14)


def test_bf16_denormal_inputs_read_as_zero():
    # bf16 0x0001 = 2^-133 (denormal) times 2^100 would be 2^-33; DAZ makes it 0
    assert bf16_tdp(0.25, (0x0001, 0), (P2(100), 0)) == 0.25
    assert bf16_tdp(0.25, (P2(100), 0), (0x8040, 0)) == 0.25  # -2^-127 (denormal) in B
    # a denormal C reads as 0 too: 2^-140 + 0 -> 0
    assert bf16_tdp(0.0, (0, 0), (0, 0), c_bits=0x00000200) == 0.0


def test_bf16_denormal_results_flush_to_zero():
    # 2^-70 * 2^-70 = 2^-140 is an fp32 denormal: FTZ gives 0
    assert bf16_tdp(0.0, (P2(-70), 0), (P2(-70), 0)) == 0.0
    # tininess is judged after rounding with unbounded exponent (SDM vol. 1, 4.9.1.5):
    # (2^-126 + 2^-149) - 1.5 * 2^-149 = 2^-126 - 2^-150 is representable with unbounded exponent,
    # so it is tiny and flushes, though on the denormal grid it would round (tie, even) to 2^-126.
    c_bits = 0x00800001  # 2^-126 + 2^-149
    a, b = (0x3FC0 - (75 << 7), 0), (0x8000 | P2(-74), 0)  # 1.5 * 2^-75, -2^-74
    assert bf16_value(a[0]) * bf16_value(b[0]) == -Fraction(3, 2) * Fraction(2) ** -149
    assert bf16_tdp(0.0, a, b, c_bits=c_bits) == 0.0
    # a smaller step stays normal: (2^-126 + 2^-149) - 2^-151 is 0.75 ulp above 2^-126: rounds to C
    a2 = (P2(-77), 0)  # 2^-77 * -2^-74 = -2^-151
    assert bf16_tdp(0.0, a2, b, c_bits=c_bits) == np.uint32(c_bits).view(np.float32)


# ---- randomized against the definitions -------------------------------------------------------

SHAPES = [(1, 1, 1), (16, 16, 16), (3, 5, 7), (16, 1, 16), (2, 16, 1)]  # (M, K dwords, N)


@pytest.mark.parametrize("op", list(SIGNS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M%dK%dN%d" % s)
def test_int_random_vs_definition(op, shape):
    M, K, N = shape
    rng = np.random.default_rng([list(SIGNS).index(op), M, K, N])
    a = rng.integers(0, 256, (M, 4 * K), dtype=np.uint8)
    b = rng.integers(0, 256, (K, 4 * N), dtype=np.uint8)
    c = rng.integers(-(2**31), 2**31, (M, N), dtype=np.int64)
    near = rng.integers(0, 2**23, (M, N)) * rng.choice([-1, 1], (M, N))  # within 2^23 of +-2^31
    c = np.where(rng.random((M, N)) < 0.5, c, np.where(near < 0, -(2**31) - near, 2**31 - 1 - near))
    c = c.astype(np.int32)
    got, r = tdp(op, c, a, b)
    assert np.array_equal(got, ref_tdp_int(op, c, a, b))
    assert not r[:M, 4 * N:].any() and not r[M:].any()


@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 3, 5), (16, 16, 16)], ids=lambda s: "M%dK%dN%d" % s)
def test_bf16_random_vs_definition(shape):
    M, K, N = shape
    rng = np.random.default_rng(1234 + M)
    # wide exponent spread (products from 2^-40 to 2^40) so rounding and absorption happen
    def vals(*s):
        return (rng.standard_normal(s) * 2.0 ** rng.integers(-20, 20, s)).astype(np.float32)
    a = pairs(bf16_bits(vals(M, 2 * K)))
    b = pairs(bf16_bits(vals(K, 2 * N)))
    c = vals(M, N).view(np.uint32)
    got, _ = tdp("tdpbf16ps", c.view(np.int32), a, b, dtype=np.float32)
    want = ref_tdp_bf16(c, a, b)
    assert np.array_equal(got, want)  # bit-exact up to the sign of zero


def test_bf16_random_with_denormals_and_tiny_products():
    rng = np.random.default_rng(7)
    M, K, N = 4, 8, 4
    a_bits = rng.integers(0, 2**16, (M, 2 * K)).astype(np.uint16) & 0x807F  # sign + mantissa: 0 or denormal
    a_bits[:, ::2] = bf16_bits(rng.standard_normal((M, K)).astype(np.float32) * 2.0**-64)
    b_bits = bf16_bits(rng.standard_normal((K, 2 * N)).astype(np.float32) * 2.0**-62)
    c = (rng.standard_normal((M, N)).astype(np.float32) * np.float32(2.0**-120)).view(np.uint32)
    got, _ = tdp("tdpbf16ps", c.view(np.int32), pairs(a_bits), pairs(b_bits), dtype=np.float32)
    want = ref_tdp_bf16(c, pairs(a_bits), pairs(b_bits))
    assert np.array_equal(got, want)
    assert not (np.abs(got[got != 0]) < np.float32(2.0**-126)).any()  # no denormal output


# ---- the shared tile GEMM ---------------------------------------------------------------------


def pack_vnni(b: np.ndarray) -> np.ndarray:
    """B [K, 16] int8 -> [K/4, 64]: row r, dword n = B[4r .. 4r+3, n]."""
    K = b.shape[0]
    return np.ascontiguousarray(b.reshape(K // 4, 4, 16).transpose(0, 2, 1).reshape(K // 4, 64))


@pytest.mark.parametrize("M,K", [(1, 4), (16, 64), (15, 128), (16, 68), (7, 200), (16, 1024), (3, 60)])
def test_tile_gemm_emulated_vs_numpy(M, K):
    rng = np.random.default_rng(M * 1000 + K)
    wide = rng.integers(-128, 128, (M, K + 13), dtype=np.int8)
    a = wide[:, :K]  # a row stride of K + 13 bytes
    b = rng.integers(-128, 128, (K, 16), dtype=np.int8)
    got = _ext.amx_emu_tile_gemm_s8s8(a, pack_vnni(b))
    assert got.dtype == np.int32 and got.shape == (M, 16)
    assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


def test_tile_gemm_extremes():
    a = np.full((16, 256), -128, np.int8)
    b = np.full((256, 16), -128, np.int8)
    assert (_ext.amx_emu_tile_gemm_s8s8(a, pack_vnni(b)) == 256 * 128 * 128).all()


def test_tile_gemm_hardware_matches_emulator_or_is_refused():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (13, 132), dtype=np.int8)
    bp = pack_vnni(rng.integers(-128, 128, (132, 16), dtype=np.int8))
    if "amx" not in kt_kernel.cpu_info()["tiers"]:  # the amx tier needs amx_permitted
        with pytest.raises(RuntimeError, match="AMX is not usable"):
            _ext.amx_tile_gemm_s8s8(a, bp)
    else:
        assert np.array_equal(_ext.amx_tile_gemm_s8s8(a, bp), _ext.amx_emu_tile_gemm_s8s8(a, bp))


# ---- faults -----------------------------------------------------------------------------------

BASE = {0: (2, 8), 1: (2, 8), 2: (2, 8)}


@pytest.mark.parametrize("program,match", [
    ([("tileloadd", 0, bytes(64), 8)], "not configured"),
    ([("tilezero", 0)], "not configured"),
    ([("tdpbssd", 0, 1, 2)], "not configured"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tileloadd", 1, bytes(64), 8)], r"tmm1 \(rows=0, colsb=0\) is not configured"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tilestored", 3, 8)], "not configured"),
    ([("ldtilecfg", cfg(BASE)), ("tileloadd", 8, bytes(64), 8)], "tile index 8"),
    ([("ldtilecfg", cfg({0: (2, 8), 1: (2, 8), 2: (3, 8)})), ("tdpbssd", 0, 1, 2)], "K mismatch"),
    ([("ldtilecfg", cfg({0: (3, 8), 1: (2, 8), 2: (2, 8)})), ("tdpbusd", 0, 1, 2)], "M mismatch"),
    ([("ldtilecfg", cfg({0: (2, 4), 1: (2, 8), 2: (2, 8)})), ("tdpbf16ps", 0, 1, 2)], "N mismatch"),
    ([("ldtilecfg", cfg({0: (2, 6), 1: (2, 8), 2: (2, 6)})), ("tdpbuud", 0, 1, 2)], "multiple of 4"),
    ([("ldtilecfg", cfg(BASE)), ("tdpbssd", 0, 0, 2)], "tiles must differ"),
    ([("ldtilecfg", cfg({0: (17, 8)}))], "exceeds 16 rows x 64 bytes"),
    ([("ldtilecfg", cfg({0: (2, 65)}))], "exceeds"),
    ([("ldtilecfg", cfg({0: (2, 0)}))], "both be 0"),
    ([("ldtilecfg", cfg({8: (1, 4)}))], "entries 8..15"),
    ([("ldtilecfg", cfg({}, palette=2))], "palette_id 2"),
    ([("ldtilecfg", cfg({}, start_row=16))], "start_row 16"),
    ([("ldtilecfg", cfg({0: (2, 8)})[:2] + b"\x01" + bytes(61))], "reserved byte 2"),
    ([("ldtilecfg", b"short")], "expected 64"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tileloadd", 0, bytes(15), 8)], "the load reads 16"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tilerelease",), ("tilezero", 0)], "not configured"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tileloadd", 0, bytes(16), 2**62)], "stride"),
    ([("ldtilecfg", cfg({0: (2, 8)})), ("tilestored", 0, 2**62)], "stride"),
    ([("write", 0, bytes(10))], "expected 1024"),
    ([("write", 9, bytes(1024))], "tile index 9"),
    ([("tdpbxyz", 0, 1, 2)], "unknown instruction"),
    ([()], "empty"),
])
def test_faults_raise_value_error(program, match):
    with pytest.raises(ValueError, match=match):
        run(*program)
    # the thread's emulated state is back in INIT: a fresh program works
    assert run(("ldtilecfg", cfg({0: (1, 4)})), ("tileloadd", 0, bytes([9, 8, 7, 6]), 4),
               ("tilestored", 0, 4)) == [bytes([9, 8, 7, 6])]


@pytest.mark.parametrize("a,b,match", [
    (np.zeros((17, 4), np.int8), np.zeros((1, 64), np.int8), r"M = 17"),
    (np.zeros((0, 4), np.int8), np.zeros((1, 64), np.int8), r"M = 0"),
    (np.zeros((2, 6), np.int8), np.zeros((1, 64), np.int8), r"K = 6"),
    (np.zeros((2, 8), np.int8), np.zeros((1, 64), np.int8), r"expected \[K/4, 64\] = \[2, 64\]"),
    (np.zeros((2, 8), np.uint8), np.zeros((2, 64), np.int8), "int8"),
    (np.zeros((2, 8), np.float32), np.zeros((2, 64), np.int8), "int8"),
    (np.zeros(8, np.int8), np.zeros((2, 64), np.int8), "-d"),
    (np.zeros((8, 2), np.int8).T, np.zeros((2, 64), np.int8), "contiguous"),
])
def test_tile_gemm_bad_arguments(a, b, match):
    with pytest.raises(ValueError, match=match):
        _ext.amx_emu_tile_gemm_s8s8(a, b)
