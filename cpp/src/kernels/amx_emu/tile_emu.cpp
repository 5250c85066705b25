// [NOTE] Software model of AMX-TILE / AMX-INT8 / AMX-BF16, following the pseudocode of the Intel
// SDM vol. 2 (LDTILECFG, TILERELEASE, TILELOADD, TILESTORED, TILEZERO, TDPB[SU,US,SS,UU]D,
// TDPBF16PS). Compiled with no ISA flags. Where this model is stricter than the hardware, it says so.
// Not modelled: memory faults and their restart (start_row is honoured as the SDM describes but only
// a test sets it), MXCSR (tdpbf16ps ignores it on hardware too; here it assumes the default
// round-to-nearest mode of the thread), NaN payloads (a NaN input gives a NaN).
#include "kernels/amx_emu/tile_emu.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/amx/tile_gemm.h"

namespace kt::amx {
namespace {

struct TileState {
  TileConfig cfg;  // palette_id 0: INIT state, nothing configured
  uint8_t reg[kNumTiles][kTileMaxRows][kTileMaxColsb];
};
thread_local TileState g_state{};  // zero-initialised: INIT state

std::string tile_desc(int t) {
  const TileConfig& c = g_state.cfg;
  return "tmm" + std::to_string(t) + " (rows=" + std::to_string(c.rows[t]) +
         ", colsb=" + std::to_string(c.colsb[t]) + ")";
}

void check_index(const char* insn, int t) {
  if (t < 0 || t >= kNumTiles)
    throw TileFault(std::string(insn) + ": tile index " + std::to_string(t) + " is not in [0, " +
                    std::to_string(kNumTiles) + ")");
}

// #UD unless a palette is loaded and tile t is configured (both rows and colsb non-zero).
void check_valid(const char* insn, int t) {
  check_index(insn, t);
  if (g_state.cfg.palette_id == 0)
    throw TileFault(std::string(insn) + " #UD: tiles are not configured (ldtilecfg with palette 1 first)");
  if (g_state.cfg.rows[t] == 0 || g_state.cfg.colsb[t] == 0)
    throw TileFault(std::string(insn) + " #UD: " + tile_desc(t) + " is not configured");
}

// zero_upper_rows(t, first): rows [first, max_rows) of t become zero.
void zero_upper_rows(int t, int first) {
  for (int r = first; r < kTileMaxRows; ++r) std::memset(g_state.reg[t][r], 0, kTileMaxColsb);
}

// write_row_and_zero(t, r, data, nbytes): the first nbytes of row r from data, the rest zero.
void write_row_and_zero(int t, int r, const void* data, int nbytes) {
  std::memcpy(g_state.reg[t][r], data, size_t(nbytes));
  std::memset(g_state.reg[t][r] + nbytes, 0, size_t(kTileMaxColsb - nbytes));
}

uint32_t dword(const uint8_t* row, int i) {
  uint32_t v;
  std::memcpy(&v, row + 4 * i, 4);
  return v;
}

// DPBD of one dword pair: the sum of the 4 byte products, each byte sign- or zero-extended.
template <bool ASigned, bool BSigned>
int32_t dpbd(uint32_t a, uint32_t b) {
  int32_t s = 0;
  for (int i = 0; i < 4; ++i) {
    uint8_t ab = uint8_t(a >> (8 * i)), bb = uint8_t(b >> (8 * i));
    int32_t x = ASigned ? int32_t(int8_t(ab)) : int32_t(ab);
    int32_t y = BSigned ? int32_t(int8_t(bb)) : int32_t(bb);
    s += x * y;  // |s| <= 4 * 255 * 255: no overflow
  }
  return s;
}

// fp32 with DAZ: a denormal reads as a zero of the same sign.
float daz(uint32_t bits) {
  if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;
  return std::bit_cast<float>(bits);
}
float make_fp32(uint16_t bf16) { return daz(uint32_t(bf16) << 16); }  // bf16 in the upper half, DAZ

// One fp32 FMA of tdpbf16ps: acc + x * y rounded once to nearest-even, with FTZ on the result. The
// SDM's underflow rule (vol. 1, 4.9.1.5) is "tiny after rounding with unbounded exponent", so a sum
// just below FLT_MIN that would round up to FLT_MIN on the denormal grid still flushes to zero;
// std::fma followed by a denormal check would get that window wrong, hence:
//   p = x * y exact in double (two 8-bit significands); s = acc + p rounded to odd in double (TwoSum
//   gives the error), and rounding a round-to-odd double (53 >= 2 * 24 + 2 bits) to fp32 is the
//   correctly rounded fp32 of the exact sum; tiny sums are scaled by 2^64 to round with unbounded
//   exponent, then flushed.
float fma_ftz(float x, float y, float acc) {
  const double p = double(x) * double(y), a = double(acc);
  double s = a + p;
  if (!std::isfinite(s)) return float(s);  // inf or NaN (overflow: RNE gives inf)
  const double bv = s - a, err = (a - (s - bv)) + (p - bv);
  if (err != 0 && (std::bit_cast<uint64_t>(s) & 1) == 0) s = std::nextafter(s, err > 0 ? INFINITY : -INFINITY);
  if (std::fabs(s) >= 0x1p-100) return float(s);  // normal or overflow to inf
  if (std::fabs(s) < 0x1p-130) return std::copysign(0.f, float(s));  // tiny whatever the rounding
  const float t = float(s * 0x1p64);  // exact scaling; fp32 rounding in the normal range
  if (std::fabs(t) < 0x1p-62f) return std::copysign(0.f, t);  // tiny after rounding: FTZ
  return t * 0x1p-64f;  // exact: a normal fp32
}

template <bool ASigned, bool BSigned>
void tdp_int(int c, int a, int b) {
  const int M = g_state.cfg.rows[c], N = g_state.cfg.colsb[c] / 4, K = g_state.cfg.colsb[a] / 4;
  for (int m = 0; m < M; ++m) {
    uint32_t tmp[16];
    for (int n = 0; n < N; ++n) tmp[n] = dword(g_state.reg[c][m], n);
    for (int k = 0; k < K; ++k) {
      const uint32_t av = dword(g_state.reg[a][m], k);
      for (int n = 0; n < N; ++n)  // int32 add with wraparound (no saturation): in uint32
        tmp[n] += uint32_t(dpbd<ASigned, BSigned>(av, dword(g_state.reg[b][k], n)));
    }
    write_row_and_zero(c, m, tmp, 4 * N);
  }
  zero_upper_rows(c, M);
}

void tdp_bf16(int c, int a, int b) {
  const int M = g_state.cfg.rows[c], N = g_state.cfg.colsb[c] / 4, K = g_state.cfg.colsb[a] / 4;
  for (int m = 0; m < M; ++m) {
    float tmp[16];
    for (int n = 0; n < N; ++n) tmp[n] = std::bit_cast<float>(dword(g_state.reg[c][m], n));
    for (int k = 0; k < K; ++k) {
      const uint32_t av = dword(g_state.reg[a][m], k);
      for (int n = 0; n < N; ++n) {
        const uint32_t bv = dword(g_state.reg[b][k], n);
        // two fp32 FMAs in order (pair element 0, then 1), each with DAZ on its inputs, one
        // round-to-nearest-even rounding and FTZ on its result; MXCSR and exceptions ignored
        for (int j = 0; j < 2; ++j) {
          float x = make_fp32(uint16_t(av >> (16 * j))), y = make_fp32(uint16_t(bv >> (16 * j)));
          tmp[n] = fma_ftz(x, y, daz(std::bit_cast<uint32_t>(tmp[n])));
        }
      }
    }
    write_row_and_zero(c, m, tmp, 4 * N);
  }
  zero_upper_rows(c, M);
}

}  // namespace

namespace emu {

const char* op_name(TdpOp op) {
  switch (op) {
    case TdpOp::dpbssd: return "tdpbssd";
    case TdpOp::dpbsud: return "tdpbsud";
    case TdpOp::dpbusd: return "tdpbusd";
    case TdpOp::dpbuud: return "tdpbuud";
    case TdpOp::dpbf16ps: return "tdpbf16ps";
  }
  return "tdp?";
}

// #GP unless: palette 0 or 1; reserved bytes zero; for palette 1, tiles 0..7 within 16 rows and
// 64 bytes, tiles 8..15 zero. Stricter than the SDM: a tile with exactly one of rows/colsb zero
// (which the hardware leaves unusable) is rejected here, as it is always a kernel bug.
// Palette 0 is tilerelease. A valid config zeroes every tile register.
void ldtilecfg(const TileConfig& cfg) {
  const std::string insn = "ldtilecfg #GP: ";
  if (cfg.palette_id > 1)
    throw TileFault(insn + "palette_id " + std::to_string(cfg.palette_id) + " is not 0 or 1");
  if (cfg.palette_id == 0) {
    tilerelease();
    return;
  }
  for (int i = 0; i < 14; ++i)
    if (cfg.reserved[i] != 0)
      throw TileFault(insn + "reserved byte " + std::to_string(2 + i) + " is " +
                      std::to_string(cfg.reserved[i]) + ", must be 0");
  for (int t = 0; t < 16; ++t) {
    const std::string tile = "tile " + std::to_string(t) + " (rows=" + std::to_string(cfg.rows[t]) +
                             ", colsb=" + std::to_string(cfg.colsb[t]) + ")";
    if (t >= kNumTiles) {
      if (cfg.rows[t] != 0 || cfg.colsb[t] != 0)
        throw TileFault(insn + tile + ": palette 1 has 8 tiles, entries 8..15 must be 0");
      continue;
    }
    if (cfg.rows[t] > kTileMaxRows || cfg.colsb[t] > kTileMaxColsb)
      throw TileFault(insn + tile + " exceeds 16 rows x 64 bytes");
    if ((cfg.rows[t] == 0) != (cfg.colsb[t] == 0))
      throw TileFault(insn + tile + ": rows and colsb must both be 0 (unused) or both non-zero");
  }
  if (cfg.start_row >= kTileMaxRows)
    throw TileFault(insn + "start_row " + std::to_string(cfg.start_row) + " is not below 16");
  g_state.cfg = cfg;
  std::memset(g_state.reg, 0, sizeof(g_state.reg));
}

void sttilecfg(TileConfig* cfg) { *cfg = g_state.cfg; }

// INIT state: no palette, every tile zero.
void tilerelease() {
  g_state.cfg = TileConfig{};
  std::memset(g_state.reg, 0, sizeof(g_state.reg));
}

// rows [start_row, rows) of t: colsb bytes from base + r * stride, the rest of the row zero; rows
// [rows, 16) zero; rows below start_row keep their contents; then start_row = 0.
void tileloadd(int t, const void* base, size_t stride) {
  check_valid("tileloadd", t);
  const int rows = g_state.cfg.rows[t], colsb = g_state.cfg.colsb[t];
  const auto* p = static_cast<const uint8_t*>(base);
  for (int r = g_state.cfg.start_row; r < rows; ++r) write_row_and_zero(t, r, p + size_t(r) * stride, colsb);
  zero_upper_rows(t, rows);
  g_state.cfg.start_row = 0;
}

// rows [start_row, rows) of t: colsb bytes to base + r * stride; nothing else is written.
void tilestored(int t, void* base, size_t stride) {
  check_valid("tilestored", t);
  const int rows = g_state.cfg.rows[t], colsb = g_state.cfg.colsb[t];
  auto* p = static_cast<uint8_t*>(base);
  for (int r = g_state.cfg.start_row; r < rows; ++r) std::memcpy(p + size_t(r) * stride, g_state.reg[t][r], size_t(colsb));
  g_state.cfg.start_row = 0;
}

// The whole register (16 x 64 bytes) becomes zero.
void tilezero(int t) {
  check_valid("tilezero", t);
  zero_upper_rows(t, 0);
  g_state.cfg.start_row = 0;
}

// C[m][n] += sum over k < A.colsb/4 of DPBD(A[m].dword[k], B[k].dword[n]), m < C.rows,
// n < C.colsb/4; the rest of C zero. #UD checks as the SDM lists them (AMX-E4).
void tdp(TdpOp op, int c, int a, int b) {
  const char* insn = op_name(op);
  check_valid(insn, c);
  check_valid(insn, a);
  check_valid(insn, b);
  const TileConfig& cfg = g_state.cfg;
  const std::string pre = std::string(insn) + " #UD: ";
  if (c == a || c == b || a == b)
    throw TileFault(pre + "tiles must differ, got C=tmm" + std::to_string(c) + ", A=tmm" + std::to_string(a) +
                    ", B=tmm" + std::to_string(b));
  if (cfg.colsb[c] % 4 != 0 || cfg.colsb[a] % 4 != 0 || cfg.colsb[b] % 4 != 0)
    throw TileFault(pre + "colsb must be a multiple of 4 (dwords): C " + tile_desc(c) + ", A " + tile_desc(a) +
                    ", B " + tile_desc(b));
  if (cfg.colsb[a] / 4 != cfg.rows[b])
    throw TileFault(pre + "K mismatch: A " + tile_desc(a) + " has " + std::to_string(cfg.colsb[a] / 4) +
                    " dwords per row, B " + tile_desc(b) + " has " + std::to_string(cfg.rows[b]) + " rows");
  if (cfg.rows[c] != cfg.rows[a])
    throw TileFault(pre + "M mismatch: C " + tile_desc(c) + " and A " + tile_desc(a) + " rows differ");
  if (cfg.colsb[c] != cfg.colsb[b])
    throw TileFault(pre + "N mismatch: C " + tile_desc(c) + " and B " + tile_desc(b) + " colsb differ");
  switch (op) {
    case TdpOp::dpbssd: tdp_int<true, true>(c, a, b); break;
    case TdpOp::dpbsud: tdp_int<true, false>(c, a, b); break;
    case TdpOp::dpbusd: tdp_int<false, true>(c, a, b); break;
    case TdpOp::dpbuud: tdp_int<false, false>(c, a, b); break;
    case TdpOp::dpbf16ps: tdp_bf16(c, a, b); break;
  }
  g_state.cfg.start_row = 0;
}

void read_register(int t, uint8_t* dst) {
  check_index("read_register", t);
  std::memcpy(dst, g_state.reg[t], kTileBytes);
}

void write_register(int t, const uint8_t* src) {
  check_index("write_register", t);
  std::memcpy(g_state.reg[t], src, kTileBytes);
}

}  // namespace emu

// The emulated instantiation of the shared tile GEMM: the same source as the AMX one.
void tile_gemm_s8s8_16x16__emu(const int8_t* a, size_t lda, const int8_t* bp, int32_t* c, size_t ldc,
                               int M, int K) {
  tile_gemm_s8s8_16x16<TileEmu>(a, lda, bp, c, ldc, M, K);
}

}  // namespace kt::amx
