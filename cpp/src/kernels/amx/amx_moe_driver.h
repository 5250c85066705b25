// [NOTE] The driver of the AMX MoE kernels, written once over a tile backend (tile_backend.h) and a
// format policy (gemm_<fmt>_amx.h) and compiled twice per format: with TileAmx in
// kernels/amx/gemm_<fmt>_amx.cpp (AMX flags), and with TileEmu in kernels/amx_emu/gemm_amx_emu.cpp
// (AVX512 flags, no AMX flags: the tiles are emulated, the rest is this same code). The epilogues
// are the AVX512 ones (avx512_driver.h's silu_mul, the format's scaling in the same operations and
// order as its AVX512 kernel), so where the dot products are exact integers the outputs are
// bit-identical to the AVX512-VNNI kernels.
//
//   gate/up   h[i, 16p + c] = silu(gate_p[c] . x[rows[i]]) * (up_p[c] . x[rows[i]])
//   down      out[tok[i], 16p + c] += weight[i] * (down_p[c] . h[i])
//
// Tiles (one ldtilecfg per kernel call, tilerelease at its end), a block of up to 32 token rows
// against two B panels (gate/up: the gate and up panel p; down: panels p and p+1):
//
//                                     B0 = tmm6          B1 = tmm7
//                                     b_rows x 64 B      b_rows x 64 B     (one K step of 16 channels)
//   A0 = tmm4  rows i0..i0+15         C00 = tmm0         C01 = tmm1
//   A1 = tmm5  rows i0+16..i0+31      C10 = tmm2         C11 = tmm3        (16 rows x 16 dwords)
//   (a_colsb bytes of K per row)
//
// Per K step: load A0 and B0 (A1 when the block has more than 16 rows, B1 for two panels), then 1
// to 4 tdp. C tiles are stored to the stack and the epilogue runs on them row by row: once after
// the last step, or after every step for formats with per-group scales (int4_g32).
//
// A tile reads 16 rows with one stride, but gate/up rows are scattered tokens and the last block
// and K step are partial: the call's rows are first gathered into a zero-padded scratch
//
//   row i (i < round_up(m, 16)):  | act row rows[i]: act_bytes(Kp) | zeros up to steps x a_colsb |
//
// and a panel whose K is not whole steps is copied into zero-padded B tiles (Fmt::b_tiles), so
// one tile configuration serves the whole call.
//
// A format policy Fmt provides:
//   a_colsb, b_rows, b_step_bytes   A tile bytes per row, B tile rows, B tile bytes for one K step
//   per_step                        the epilogue runs after every K step (else once, at the end)
//   steps(Kp), act_bytes(Kp)        K steps of a padded K; activation bytes of one row
//   b_tiles(panel, Kp, buf)         the panel as steps x b_step_bytes of B tiles (the panel itself,
//                                   or a copy / unpacking into buf)
//   tdp<Tiles, C, A, B>()           the tile instruction
//   per_step:  step(acc, c, panel, s, act, row) -> acc after step s;  finish(acc, act, row) -> y
//   otherwise: finish(c, panel, Kp, act, row) -> y
// where c is one row of 16 dwords of a C tile and row the activation row (scale, group sums).
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/amx/tile_backend.h"
#include "kernels/avx512/avx512_driver.h"
#include "kt/kernels.h"
#include "runtime/thread_scratch.h"

namespace kt::amx {
namespace {

constexpr int kBlockRows = 32;  // two A tiles

template <class Tiles>
struct TileScope {
  explicit TileScope(const TileConfig& c) { Tiles::config(c); }
  ~TileScope() { Tiles::release(); }
};

template <class Fmt>
TileConfig tile_config() {
  TileConfig c;
  c.palette_id = 1;
  for (int t = 0; t < 4; ++t) c.rows[t] = kTileMaxRows, c.colsb[t] = kTileMaxColsb;  // C
  for (int t = 4; t < 6; ++t) c.rows[t] = kTileMaxRows, c.colsb[t] = Fmt::a_colsb;   // A
  for (int t = 6; t < 8; ++t) c.rows[t] = Fmt::b_rows, c.colsb[t] = kTileMaxColsb;   // B
  return c;
}

// Rows [0, m) of act (row i is act row rows[i], or i when rows is null), each lda bytes with a
// zero tail, then zero rows up to a multiple of 16.
template <class Fmt>
const uint8_t* gather_rows(const ActView& act, const int32_t* rows, int m, size_t lda) {
  const int mpad = (m + 15) / 16 * 16;
  const size_t n = Fmt::act_bytes(act.Kp);
  uint8_t* x = thread_scratch(0, size_t(mpad) * lda);
  for (int i = 0; i < m; ++i) {
    std::memcpy(x + lda * i, act.data + act.stride * size_t(rows ? rows[i] : i), n);
    std::memset(x + lda * i + n, 0, lda - n);
  }
  std::memset(x + lda * m, 0, lda * size_t(mpad - m));
  return x;
}

template <class Tiles, int NB>
void store_c(int32_t (*c)[2][16][16], bool lower) {
  Tiles::template store<0>(c[0][0], /*stride=*/64);
  if constexpr (NB == 2) Tiles::template store<1>(c[0][1], /*stride=*/64);
  if (lower) {
    Tiles::template store<2>(c[1][0], /*stride=*/64);
    if constexpr (NB == 2) Tiles::template store<3>(c[1][1], /*stride=*/64);
  }
}

// y[r][t] for rows r < mr of the block at `a` (lda bytes per row) and the NB panels whose B tiles
// are b[t] and packed bytes panel[t]. row_ids[r]: the activation row of block row r.
template <class Tiles, class Fmt, int NB>
void tile_block(const uint8_t* a, size_t lda, int mr, const uint8_t* const* b, const uint8_t* const* panel,
                int steps, int Kp, const ActView& act, const int* row_ids, __m512 (*y)[2]) {
  const bool lower = mr > 16;
  alignas(64) int32_t c[2][2][16][16];
  if constexpr (Fmt::per_step)
    for (int r = 0; r < mr; ++r)
      for (int t = 0; t < NB; ++t) y[r][t] = _mm512_setzero_ps();
  Tiles::template zero<0>(), Tiles::template zero<1>(), Tiles::template zero<2>(), Tiles::template zero<3>();
  for (int s = 0; s < steps; ++s) {
    const uint8_t* as = a + size_t(s) * Fmt::a_colsb;
    // C0t += A0 . Bt, C1t += A1 . Bt
    Tiles::template load<4>(as, /*stride=*/lda);
    Tiles::template load<6>(b[0] + Fmt::b_step_bytes * s, /*stride=*/64);
    Fmt::template tdp<Tiles, 0, 4, 6>();
    if constexpr (NB == 2) {
      Tiles::template load<7>(b[1] + Fmt::b_step_bytes * s, /*stride=*/64);
      Fmt::template tdp<Tiles, 1, 4, 7>();
    }
    if (lower) {
      Tiles::template load<5>(as + 16 * lda, /*stride=*/lda);
      Fmt::template tdp<Tiles, 2, 5, 6>();
      if constexpr (NB == 2) Fmt::template tdp<Tiles, 3, 5, 7>();
    }
    if constexpr (Fmt::per_step) {
      store_c<Tiles, NB>(c, lower);
      for (int r = 0; r < mr; ++r)
        for (int t = 0; t < NB; ++t) y[r][t] = Fmt::step(y[r][t], c[r / 16][t][r % 16], panel[t], s, act, row_ids[r]);
      Tiles::template zero<0>(), Tiles::template zero<1>(), Tiles::template zero<2>(), Tiles::template zero<3>();
    }
  }
  if constexpr (Fmt::per_step) {
    for (int r = 0; r < mr; ++r)
      for (int t = 0; t < NB; ++t) y[r][t] = Fmt::finish(y[r][t], act, row_ids[r]);
  } else {
    store_c<Tiles, NB>(c, lower);
    for (int r = 0; r < mr; ++r)
      for (int t = 0; t < NB; ++t) y[r][t] = Fmt::finish(c[r / 16][t][r % 16], panel[t], Kp, act, row_ids[r]);
  }
}

template <class Tiles, class Fmt>
void gateup(const GateUpArgs& a) {
  if (a.m <= 0 || a.p0 >= a.p1) return;
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, a.rows, a.m, lda);
  uint8_t* bbuf[2] = {thread_scratch(1, Fmt::b_step_bytes * steps), thread_scratch(2, Fmt::b_step_bytes * steps)};
  TileScope<Tiles> scope(tile_config<Fmt>());
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* panel[2] = {a.gate->data + a.gate->panel_bytes * p, a.up->data + a.up->panel_bytes * p};
    const uint8_t* b[2] = {Fmt::b_tiles(panel[0], Kp, bbuf[0]), Fmt::b_tiles(panel[1], Kp, bbuf[1])};
    for (int i0 = 0; i0 < a.m; i0 += kBlockRows) {
      const int mr = a.m - i0 < kBlockRows ? a.m - i0 : kBlockRows;
      int row_ids[kBlockRows];
      for (int r = 0; r < mr; ++r) row_ids[r] = a.rows ? a.rows[i0 + r] : i0 + r;
      __m512 y[kBlockRows][2];
      tile_block<Tiles, Fmt, 2>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, y);
      // stage epilogue: h = silu(gate) * up
      for (int r = 0; r < mr; ++r)
        _mm512_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN, avx512::silu_mul(y[r][0], y[r][1]));
    }
  }
}

template <class Tiles, class Fmt>
void down(const DownArgs& a) {
  if (a.m <= 0 || a.p0 >= a.p1) return;
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, nullptr, a.m, lda);
  uint8_t* bbuf[2] = {thread_scratch(1, Fmt::b_step_bytes * steps), thread_scratch(2, Fmt::b_step_bytes * steps)};
  TileScope<Tiles> scope(tile_config<Fmt>());
  for (int p = a.p0; p < a.p1; p += 2) {
    const int nb = a.p1 - p >= 2 ? 2 : 1;
    const uint8_t* panel[2] = {a.down->data + a.down->panel_bytes * p, nullptr};
    const uint8_t* b[2] = {Fmt::b_tiles(panel[0], Kp, bbuf[0]), nullptr};
    if (nb == 2) {
      panel[1] = a.down->data + a.down->panel_bytes * (p + 1);
      b[1] = Fmt::b_tiles(panel[1], Kp, bbuf[1]);
    }
    for (int i0 = 0; i0 < a.m; i0 += kBlockRows) {
      const int mr = a.m - i0 < kBlockRows ? a.m - i0 : kBlockRows;
      int row_ids[kBlockRows];
      for (int r = 0; r < mr; ++r) row_ids[r] = i0 + r;
      __m512 y[kBlockRows][2];
      if (nb == 2) tile_block<Tiles, Fmt, 2>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, y);
      else tile_block<Tiles, Fmt, 1>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, y);
      // stage epilogue: out[tok] += weight * y
      for (int r = 0; r < mr; ++r) {
        const __m512 weight = _mm512_set1_ps(a.weight[i0 + r]);
        for (int t = 0; t < nb; ++t) {
          float* o = a.out + a.ldo * a.tok[i0 + r] + (p + t) * kPanelN;
          _mm512_storeu_ps(o, _mm512_fmadd_ps(weight, y[r][t], _mm512_loadu_ps(o)));
        }
      }
    }
  }
}

}  // namespace
}  // namespace kt::amx
