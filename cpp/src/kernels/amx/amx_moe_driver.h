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
// Whole-K formats (int8_pc, bf16; tile_block). Tiles (one ldtilecfg per kernel call, tilerelease
// at its end), a block of up to 32 token rows against two B panels (gate/up: the gate and up
// panel p; down: panels p and p+1):
//
//                                     B0 = tmm6          B1 = tmm7
//                                     b_rows x 64 B      b_rows x 64 B     (one K step of 16 channels)
//   A0 = tmm4  rows i0..i0+15         C00 = tmm0         C01 = tmm1
//   A1 = tmm5  rows i0+16..i0+31      C10 = tmm2         C11 = tmm3        (16 rows x 16 dwords)
//   (a_colsb bytes of K per row)
//
// Per K step: load A0 and B0 (A1 when the block has more than 16 rows, B1 for two panels), then 1
// to 4 tdp. After the last step the C tiles are stored to the stack and the epilogue runs on them
// row by row.
//
// Grouped formats (per-group scales, int4_g32; group_pass): 16 rows against one panel, C0 and C1
// alternating over the K steps (A tmm4/tmm5, B tmm6/tmm7), each step's C tile scaled into 16
// register accumulators while the tile unit computes the next step.
//
// Every K step also prefetches a slice of the next panels into L2 (NextPanels).
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
//   per_step:  Act                                  its activations' accessors (kernels/int4_act.h):
//                                                   q8_32 rows are gathered block by block
//              group_scales(panel, s, &d, &m)       the step's per-channel scales
//              step(acc, c, d, m, gsum, gscale)     after step s: gsum the row's group sum, gscale
//                -> acc                             its group scale (q8_32; 1 otherwise)
//              finish(acc, scale) -> y              scale the row's activation scale (1 for q8_32)
//   otherwise: finish(c, panel, Kp, act, row) -> y
// where c is one row of 16 dwords of a C tile and row the activation row.
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
constexpr size_t kPrefetchMaxRowBytes = size_t(256) << 10;  // an eighth of the AMX CPUs' 2 MiB L2; see NextPanels

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
    const int row = rows ? rows[i] : i;
    if constexpr (requires { requires Fmt::Act::kGroupScale; }) {  // q8_32: each block's q bytes, a step each
      for (int s = 0; s < Fmt::steps(act.Kp); ++s)
        std::memcpy(x + lda * i + size_t(s) * Fmt::a_colsb, Fmt::Act::q(act, row, s), Fmt::a_colsb);
    } else {
      std::memcpy(x + lda * i, act.data + act.stride * size_t(row), n);
    }
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

// A prefetch into L2. An asm statement, not _mm_prefetch: gcc 12 takes a function whose only
// effects are __builtin_prefetch calls for pure and deletes its calls when it is not inlined
// early, which left every AMX kernel without its prefetches.
inline void prefetch_l2(const uint8_t* p) { asm volatile("prefetcht1 %0" ::"m"(*p)); }

// The next panels (the packed bytes of up to 2), prefetched into L2 a slice at a time while the
// current ones are computed, so that the first row block of a panel finds its B tiles in L2. The
// calls of one panel visit `units` points (row blocks x K steps); point u prefetches the u-th of
// `units` equal slices, so the whole of each next panel is requested once, whatever the block
// count.
//
// It runs only while the call's gathered rows take at most kPrefetchMaxRowBytes, and the kernels
// are instantiated with and without it (a run-time switch in the step loop changed the register
// allocation of the int4 pass where it was off). It sped up shapes A and B at M=512 and left C
// unchanged; prefetching at every row count made C and B slower (docs/benchmarks/notes.md, "AMX
// next-panel prefetch"): with many or long rows the first block's misses are a small part of a panel's time, and the prefetched
// panels only crowd the gathered rows, which every panel reads again, out of L2.
struct NextPanels {
  const uint8_t* at[2] = {nullptr, nullptr};
  size_t slice;  // bytes per point, 16.16 fixed point

  NextPanels(size_t panel_bytes, size_t points) : slice((panel_bytes << 16) / points) {}

  inline void touch(size_t u) const {
    const size_t b0 = (u * slice >> 16) & ~size_t(63), b1 = (u + 1) * slice >> 16;
    for (int t = 0; t < 2; ++t)
      if (at[t])
        for (size_t b = b0; b < b1; b += 64) prefetch_l2(at[t] + b);
  }
};

// y[r][t] for rows r < mr of the block at `a` (lda bytes per row) and the NB panels whose B tiles
// are b[t] and packed bytes panel[t]. row_ids[r]: the activation row of block row r. Step s of the
// block prefetches slice u0 + s of pf when Pf.
template <class Tiles, class Fmt, bool Pf, int NB>
void tile_block(const uint8_t* a, size_t lda, int mr, const uint8_t* const* b, const uint8_t* const* panel,
                int steps, int Kp, const ActView& act, const int* row_ids, const NextPanels& pf, size_t u0,
                __m512 (*y)[2]) {
  static_assert(!Fmt::per_step, "grouped formats take group_pass");
  const bool lower = mr > 16;
  alignas(64) int32_t c[2][2][16][16];
  Tiles::template zero<0>(), Tiles::template zero<1>(), Tiles::template zero<2>(), Tiles::template zero<3>();
  for (int s = 0; s < steps; ++s) {
    if constexpr (Pf) pf.touch(u0 + s);
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
  }
  store_c<Tiles, NB>(c, lower);
  for (int r = 0; r < mr; ++r)
    for (int t = 0; t < NB; ++t) y[r][t] = Fmt::finish(c[r / 16][t][r % 16], panel[t], Kp, act, row_ids[r]);
}

// Grouped formats (per_step: scales per K step) scale every step's C tile into fp32 accumulators.
// A pass covers 16 rows of one panel, so that its 16 accumulators stay in registers, and two C
// tiles alternate: the tile unit computes step s + 1 while the vector units scale step s. (With
// all four C tiles of a block at once, 64 accumulators went through memory and the scaling took
// most of the time, slower than the AVX512-VNNI kernel: docs/benchmarks/notes.md.)
//
// y[r] for the 16 rows at `a` (lda bytes per row; padding rows are zero) and the panel whose B
// tiles are b and packed bytes panel; gs[16 s + r]: row r's group sum of step s as a float, and
// gs[16 (steps + s) + r] its group scale (1 but for q8_32); scale: the rows' activation scales
// (1 for q8_32). Step s prefetches slice u0 + s of pf when Pf.
template <class Tiles, class Fmt, int C, int A, int B>
inline void group_tdp(const uint8_t* a, size_t lda, const uint8_t* b, int s) {
  Tiles::template zero<C>();
  Tiles::template load<A>(a + size_t(s) * Fmt::a_colsb, /*stride=*/lda);
  Tiles::template load<B>(b + Fmt::b_step_bytes * s, /*stride=*/64);
  Fmt::template tdp<Tiles, C, A, B>();
}

template <class Fmt>
inline void group_scale(__m512 (&acc)[16], const int32_t (&c)[16][16], const uint8_t* panel, int s, int steps,
                        const float* gs) {
  __m512 d, m;
  Fmt::group_scales(panel, s, &d, &m);
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) acc[r] = Fmt::step(acc[r], c[r], d, m, gs[16 * s + r], gs[16 * (steps + s) + r]);
}

template <class Tiles, class Fmt, bool Pf>
void group_pass(const uint8_t* a, size_t lda, const uint8_t* b, const uint8_t* panel, int steps, const float* gs,
                const float* scale, const NextPanels& pf, size_t u0, __m512 (&y)[16]) {
  static_assert(Fmt::per_step, "whole-K formats take tile_block");
  alignas(64) int32_t c[2][16][16];
  __m512 acc[16];  // every loop over it is unrolled, so that it lives in registers
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) acc[r] = _mm512_setzero_ps();
  group_tdp<Tiles, Fmt, 0, 4, 6>(a, lda, b, 0);
  for (int s = 0; s < steps; s += 2) {
    // even steps in C0 (A tmm4, B tmm6), odd steps in C1 (tmm5, tmm7)
    if constexpr (Pf) pf.touch(u0 + s);
    if (s + 1 < steps) group_tdp<Tiles, Fmt, 1, 5, 7>(a, lda, b, s + 1);
    Tiles::template store<0>(c[0]);
    group_scale<Fmt>(acc, c[0], panel, s, steps, gs);
    if (s + 1 >= steps) break;
    if constexpr (Pf) pf.touch(u0 + s + 1);
    if (s + 2 < steps) group_tdp<Tiles, Fmt, 0, 4, 6>(a, lda, b, s + 2);
    Tiles::template store<1>(c[1]);
    group_scale<Fmt>(acc, c[1], panel, s + 1, steps, gs);
  }
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) y[r] = Fmt::finish(acc[r], scale[r]);
}

// The group sums and scales of the rows gathered by gather_rows (rows[i], or i), as group_pass
// reads them: per 16 rows (zero rows past m), 2 steps x 16 floats, gs[16 (2 steps h + s) + r] the
// group sum of row 16 h + r and gs[16 (2 steps h + steps + s) + r] its group scale (Fmt::Act);
// scale[i] for row i.
template <class Fmt>
void gather_group_sums(const ActView& act, const int32_t* rows, int m, int steps, float** gs, float** scale) {
  using Act = typename Fmt::Act;
  const int mpad = (m + 15) / 16 * 16;
  *gs = reinterpret_cast<float*>(thread_scratch(3, (size_t(mpad) * 2 * steps + mpad) * sizeof(float)));
  *scale = *gs + size_t(mpad) * 2 * steps;
  for (int i = 0; i < mpad; ++i) {
    const int row = i < m ? (rows ? rows[i] : i) : -1;
    float* g = *gs + size_t(16) * 2 * steps * (i / 16) + i % 16;
    for (int s = 0; s < steps; ++s) {
      g[16 * s] = row < 0 ? 0.f : float(Act::sum(act, row, s));
      g[16 * (steps + s)] = row < 0 ? 0.f : Act::group_scale(act, row, s);
    }
    (*scale)[i] = row < 0 ? 0.f : Act::row_scale(act, row);
  }
}

template <class Tiles, class Fmt, bool Pf>
void gateup_grouped(const GateUpArgs& a) {
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, a.rows, a.m, lda);
  float *gs, *scale;
  gather_group_sums<Fmt>(a.act, a.rows, a.m, steps, &gs, &scale);
  uint8_t* bbuf[2] = {thread_scratch(1, Fmt::b_step_bytes * steps), thread_scratch(2, Fmt::b_step_bytes * steps)};
  TileScope<Tiles> scope(tile_config<Fmt>());
  const size_t pb = a.gate->panel_bytes;
  const int halves = (a.m + 15) / 16;
  NextPanels pf(pb, size_t(steps) * halves * 2);
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* panel[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    pf.at[0] = p + 1 < a.p1 ? panel[0] + pb : nullptr;
    pf.at[1] = p + 1 < a.p1 ? panel[1] + pb : nullptr;
    const uint8_t* b[2] = {Fmt::b_tiles(panel[0], Kp, bbuf[0]), Fmt::b_tiles(panel[1], Kp, bbuf[1])};
    for (int hf = 0; hf < halves; ++hf) {
      const int i0 = 16 * hf, mr = a.m - i0 < 16 ? a.m - i0 : 16;
      __m512 g[16], u[16];
      group_pass<Tiles, Fmt, Pf>(x + lda * i0, lda, b[0], panel[0], steps, gs + size_t(32) * steps * hf, scale + i0,
                                 pf, size_t(steps) * (2 * hf), g);
      group_pass<Tiles, Fmt, Pf>(x + lda * i0, lda, b[1], panel[1], steps, gs + size_t(32) * steps * hf, scale + i0,
                                 pf, size_t(steps) * (2 * hf + 1), u);
      // stage epilogue: h = silu(gate) * up
      for (int r = 0; r < mr; ++r)
        _mm512_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN, avx512::gated(g[r], u[r], a.glu, p * kPanelN));
    }
  }
}

template <class Tiles, class Fmt, bool Pf>
void down_grouped(const DownArgs& a) {
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, nullptr, a.m, lda);
  float *gs, *scale;
  gather_group_sums<Fmt>(a.act, nullptr, a.m, steps, &gs, &scale);
  uint8_t* bbuf = thread_scratch(1, Fmt::b_step_bytes * steps);
  TileScope<Tiles> scope(tile_config<Fmt>());
  const size_t pb = a.down->panel_bytes;
  const int halves = (a.m + 15) / 16;
  NextPanels pf(pb, size_t(steps) * halves);
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* panel = a.down->data + pb * p;
    // the next panel, else (the last one) the next matrix's first: the caller runs the experts
    // one after another over the same panels
    pf.at[0] = p + 1 < a.p1 ? panel + pb : a.next ? a.next + pb * a.p0 : nullptr;
    const uint8_t* b = Fmt::b_tiles(panel, Kp, bbuf);
    for (int hf = 0; hf < halves; ++hf) {
      const int i0 = 16 * hf, mr = a.m - i0 < 16 ? a.m - i0 : 16;
      __m512 y[16];
      group_pass<Tiles, Fmt, Pf>(x + lda * i0, lda, b, panel, steps, gs + size_t(32) * steps * hf, scale + i0, pf,
                                 size_t(steps) * hf, y);
      // stage epilogue: out[tok] += weight * y
      for (int r = 0; r < mr; ++r) {
        float* o = a.out + a.ldo * a.tok[i0 + r] + p * kPanelN;
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(a.weight[i0 + r]), y[r], _mm512_loadu_ps(o)));
      }
    }
  }
}

template <class Tiles, class Fmt, bool Pf>
void gateup_whole(const GateUpArgs& a) {
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, a.rows, a.m, lda);
  uint8_t* bbuf[2] = {thread_scratch(1, Fmt::b_step_bytes * steps), thread_scratch(2, Fmt::b_step_bytes * steps)};
  TileScope<Tiles> scope(tile_config<Fmt>());
  const size_t pb = a.gate->panel_bytes;
  NextPanels pf(pb, size_t(steps) * ((a.m + kBlockRows - 1) / kBlockRows));
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* panel[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    pf.at[0] = p + 1 < a.p1 ? panel[0] + pb : nullptr;
    pf.at[1] = p + 1 < a.p1 ? panel[1] + pb : nullptr;
    const uint8_t* b[2] = {Fmt::b_tiles(panel[0], Kp, bbuf[0]), Fmt::b_tiles(panel[1], Kp, bbuf[1])};
    for (int i0 = 0; i0 < a.m; i0 += kBlockRows) {
      const int mr = a.m - i0 < kBlockRows ? a.m - i0 : kBlockRows;
      int row_ids[kBlockRows];
      for (int r = 0; r < mr; ++r) row_ids[r] = a.rows ? a.rows[i0 + r] : i0 + r;
      __m512 y[kBlockRows][2];
      tile_block<Tiles, Fmt, Pf, 2>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, pf,
                                size_t(steps) * (i0 / kBlockRows), y);
      // stage epilogue: h = silu(gate) * up
      for (int r = 0; r < mr; ++r)
        _mm512_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN, avx512::gated(y[r][0], y[r][1], a.glu, p * kPanelN));
    }
  }
}

template <class Tiles, class Fmt, bool Pf>
void down_whole(const DownArgs& a) {
  const int Kp = a.act.Kp, steps = Fmt::steps(Kp);
  const size_t lda = size_t(steps) * Fmt::a_colsb;
  const uint8_t* x = gather_rows<Fmt>(a.act, nullptr, a.m, lda);
  uint8_t* bbuf[2] = {thread_scratch(1, Fmt::b_step_bytes * steps), thread_scratch(2, Fmt::b_step_bytes * steps)};
  TileScope<Tiles> scope(tile_config<Fmt>());
  const size_t pb = a.down->panel_bytes;
  NextPanels pf(pb, size_t(steps) * ((a.m + kBlockRows - 1) / kBlockRows));
  for (int p = a.p0; p < a.p1; p += 2) {
    const int nb = a.p1 - p >= 2 ? 2 : 1;
    const uint8_t* panel[2] = {a.down->data + pb * p, nullptr};
    const uint8_t* b[2] = {Fmt::b_tiles(panel[0], Kp, bbuf[0]), nullptr};
    if (nb == 2) {
      panel[1] = a.down->data + pb * (p + 1);
      b[1] = Fmt::b_tiles(panel[1], Kp, bbuf[1]);
    }
    // the next two panels, else (the last pair) the next matrix's first two: the caller runs the
    // experts one after another over the same panels
    for (int t = 0; t < 2; ++t) {
      const int q = p + 2 + t;
      pf.at[t] = q < a.p1 ? a.down->data + pb * q : a.next && a.p0 + t < a.p1 ? a.next + pb * (a.p0 + t) : nullptr;
    }
    for (int i0 = 0; i0 < a.m; i0 += kBlockRows) {
      const int mr = a.m - i0 < kBlockRows ? a.m - i0 : kBlockRows;
      int row_ids[kBlockRows];
      for (int r = 0; r < mr; ++r) row_ids[r] = i0 + r;
      __m512 y[kBlockRows][2];
      const size_t u0 = size_t(steps) * (i0 / kBlockRows);
      if (nb == 2) tile_block<Tiles, Fmt, Pf, 2>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, pf, u0, y);
      else tile_block<Tiles, Fmt, Pf, 1>(x + lda * i0, lda, mr, b, panel, steps, Kp, a.act, row_ids, pf, u0, y);
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

template <class Tiles, class Fmt, bool Pf>
void gateup_rows(const GateUpArgs& a) {
  if constexpr (Fmt::per_step) gateup_grouped<Tiles, Fmt, Pf>(a);
  else gateup_whole<Tiles, Fmt, Pf>(a);
}

template <class Tiles, class Fmt, bool Pf>
void down_rows(const DownArgs& a) {
  if constexpr (Fmt::per_step) down_grouped<Tiles, Fmt, Pf>(a);
  else down_whole<Tiles, Fmt, Pf>(a);
}

// NextPanels runs only where it pays: while the call's gathered rows are small (see there).
template <class Fmt>
bool prefetch_pays(const ActView& act, int m) {
  return size_t(m) * Fmt::steps(act.Kp) * Fmt::a_colsb <= kPrefetchMaxRowBytes;
}

template <class Tiles, class Fmt>
void gateup(const GateUpArgs& a) {
  if (a.m <= 0 || a.p0 >= a.p1) return;
  if (prefetch_pays<Fmt>(a.act, a.m)) gateup_rows<Tiles, Fmt, true>(a);
  else gateup_rows<Tiles, Fmt, false>(a);
}

template <class Tiles, class Fmt>
void down(const DownArgs& a) {
  if (a.m <= 0 || a.p0 >= a.p1) return;
  if (prefetch_pays<Fmt>(a.act, a.m)) down_rows<Tiles, Fmt, true>(a);
  else down_rows<Tiles, Fmt, false>(a);
}

}  // namespace
}  // namespace kt::amx
