// aarch64 drivers shared by the neon, neon_dotprod, neon_i8mm and neon_bf16 kernel files, modelled
// on avx512_driver.h. Internal linkage: each kernel TU has its own -march, and a shared inline
// symbol could otherwise resolve to a copy that uses instructions the host lacks.
//
// A Tile policy computes an MR x 16 block of fp32 dot products for NM matrices (2: gate and up;
// down: NM adjacent panels) over the whole padded K:
//   static constexpr int max_rows(int nm);   its row block for nm matrices: the 4 NM MR accumulator
//                                            registers, plus the operands, must fit the 32 v-regs
//   static constexpr int down_panels;        adjacent panels the down stage computes at once (1, 2, 4)
//   template <int NM, int MR> static void compute(const uint8_t* const* w, int Kp, const ActView& act,
//       const int* rows, float32x4_t (&acc)[NM][MR][4]);
//                                            acc[t][r][q]: channels 4q..4q+3 of matrix t, row rows[r]
// A Tile prefetches its own weight stream (prefetch_stream, once per 64 bytes read per matrix) and
// accumulates in local arrays (store_acc).
// The drivers walk panels, then rows in blocks of at most MR (kernels/row_blocks.h), and fuse the
// epilogues: h = gated(g, u) for gate/up (neon_epilogue.h), out += weight * y for down.
#pragma once
#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "kernels/int4_act.h"
#include "kernels/neon/neon_epilogue.h"
#include "kernels/row_blocks.h"
#include "kt/kernels.h"

namespace kt::neon {
namespace {

// How far ahead of its loads a Tile prefetches its weights: at decode each panel is read once, in
// one pass, and a matrix's panels are contiguous, so the stream runs on into the next panel. The
// x86 kernels' measured distance (next_panels.h, kStreamAhead); not measured on any ARM core, where
// the hardware prefetchers may make it redundant. Into L1, as for the x86 CPUs that stream there.
constexpr size_t kPrefetchAhead = size_t(4) << 10;

inline void prefetch_stream(const uint8_t* line) { __builtin_prefetch(line + kPrefetchAhead, /*rw=*/0, /*locality=*/3); }

// A Tile's accumulators live in a local array until the end: `acc` is the caller's memory, which
// the weights' byte loads may alias as far as the compiler knows, so updating it in the K loop
// would store every accumulator after each multiply-add.
template <int NM, int MR>
[[gnu::always_inline]] inline void store_acc(const float32x4_t (&c)[NM][MR][4], float32x4_t (&acc)[NM][MR][4]) {
  for (int t = 0; t < NM; ++t)
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 4; ++q) acc[t][r][q] = c[t][r][q];
}

// The Tile of the formats that store plain values (bf16, f16, f32): fp32 FMLA by lane. Each row's
// activations are loaded 4 k at a time into one register; each widened weight register (4
// channels of one k) then feeds one FMLA per row, with that k's lane as the multiplier.
//   Widen::kK      k per packed block (bf16: 2, f16 / f32: 1), of Widen::kBytes bytes
//   Widen::load(block, i, q)  channels 4q..4q+3 of k i of the block, as fp32
// Registers: 4 NM MR accumulators (16: 2 rows of gate + up, 4 of one down panel) + MR activations
// + the weights gcc loads ahead; with 3 rows of gate + up (24 accumulators) gcc 12 hoisted the
// loads of all 4 k and spilled about one accumulator per 3 FMLA.
template <class Widen>
struct ValueTile {
  static constexpr int max_rows(int nm) { return nm == 1 ? 4 : nm == 2 ? 2 : 1; }
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    constexpr int kK = Widen::kK;
    constexpr size_t kStepBytes = 4 / kK * Widen::kBytes;  // weights of 4 k, per matrix
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * size_t(rows[r]));
    float32x4_t c[NM][MR][4];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) c[t][r][q] = vdupq_n_f32(0.f);
    int k = 0;
    for (; k + 4 <= Kp; k += 4) {
      const size_t at = size_t(k / kK) * Widen::kBytes;
      for (int t = 0; t < NM; ++t)
        for (size_t b = 0; b < kStepBytes; b += 64) prefetch_stream(w[t] + at + b);
      float32x4_t xv[MR];
      for (int r = 0; r < MR; ++r) xv[r] = vld1q_f32(x[r] + k);
      lane<0>(w, at, xv, c);
      lane<1>(w, at, xv, c);
      lane<2>(w, at, xv, c);
      lane<3>(w, at, xv, c);
    }
    // the last Kp % 4 k (f16, f32: any K; bf16: K % 4 == 2), multiplier by scalar
    for (; k < Kp; ++k) {
      const uint8_t* blk[NM];
      for (int t = 0; t < NM; ++t) blk[t] = w[t] + size_t(k / kK) * Widen::kBytes;
      for (int t = 0; t < NM; ++t)
        for (int q = 0; q < 4; ++q) {
          const float32x4_t v = Widen::load(blk[t], k % kK, q);
          for (int r = 0; r < MR; ++r) c[t][r][q] = vfmaq_n_f32(c[t][r][q], v, x[r][k]);
        }
    }
    store_acc(c, acc);
  }

  // c += w[k + L] * x[k + L], k + L in block (L / kK) of the 4 k at byte `at`
  template <int L, int NM, int MR>
  [[gnu::always_inline]] static void lane(const uint8_t* const* w, size_t at, const float32x4_t (&xv)[MR],
                                          float32x4_t (&c)[NM][MR][4]) {
    for (int t = 0; t < NM; ++t)
      for (int q = 0; q < 4; ++q) {
        const float32x4_t v = Widen::load(w[t] + at + L / Widen::kK * Widen::kBytes, L % Widen::kK, q);
        for (int r = 0; r < MR; ++r) c[t][r][q] = vfmaq_laneq_f32(c[t][r][q], v, xv[r], L);
      }
  }
};

// The int4_g32 Tile (int4_g32 x q8s, int4_g32_zp x q8_32; kernels/int4_act.h), shared by the neon
// and neon_dotprod kernels, which differ in the GroupDot policy: the exact int32 dot products of one
// group (32 k) of 4 channels for MR rows,
//   GroupDot::X                          a row's group of activations, as the policy keeps it
//   GroupDot::load(const int8_t* x, X&)  the 32 int8 of a group
//   template <int MR> GroupDot::dot(const uint8_t* q, const X (&x)[MR], int32x4_t (&isum)[MR])
//                                        q: the block's nibbles of channels 4q..4q+3 (q[j] + 16q, j
//                                        = 0..3, 64 bytes apart); the policy unpacks them once for MR rows
// Per group g, for each row r, matrix t and 4 channels (one register), as the reference:
//   acc += cvt(isum) * d[g] + m[g] * gsum_a[r,g]                 q8s;  at the end acc *= s_a[r]
//   acc += (cvt(isum) * d[g] + m[g] * gsum_a[r,g]) * s_a[r,g]    q8_32
// kZeroPoint: int4_g32_zp's blocks, whose m holds -z: the group minimum is d * m in fp32 (exact).
// The 4 channel groups of a block run one after another, so only NM MR int32 sums are live.
template <class GroupDot, bool kZeroPoint, ActFormat kAct>
struct Int4G32Tile {
  using Act = Int4Act<kAct>;
  static constexpr int max_rows(int nm) { return GroupDot::max_rows(nm); }
  static constexpr int down_panels = GroupDot::down_panels;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    float32x4_t c[NM][MR][4];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) c[t][r][q] = vdupq_n_f32(0.f);
    for (int g = 0; g < Kp / Int4G32Block::kK; ++g) {
      const Int4G32Block* blk[NM];
      for (int t = 0; t < NM; ++t) {
        blk[t] = reinterpret_cast<const Int4G32Block*>(w[t]) + g;
        const uint8_t* at = reinterpret_cast<const uint8_t*>(blk[t]);
        for (size_t b = 0; b < sizeof(Int4G32Block); b += 64) prefetch_stream(at + b);
      }
      typename GroupDot::X x[MR];
      float gsum[MR];
      for (int r = 0; r < MR; ++r) {
        GroupDot::load(Act::q(act, rows[r], g), x[r]);
        gsum[r] = float(Act::sum(act, rows[r], g));
      }
      for (int q = 0; q < 4; ++q)
        for (int t = 0; t < NM; ++t) {
          int32x4_t isum[MR];
          GroupDot::template dot<MR>(blk[t]->q[0] + 16 * q, x, isum);
          const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk[t]->d + 4 * q)));
          float32x4_t m = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk[t]->m + 4 * q)));
          if constexpr (kZeroPoint) m = vmulq_f32(d, m);
          for (int r = 0; r < MR; ++r) {
            if constexpr (Act::kGroupScale) {
              const float32x4_t y = vfmaq_n_f32(vmulq_f32(vcvtq_f32_s32(isum[r]), d), m, gsum[r]);
              c[t][r][q] = vfmaq_n_f32(c[t][r][q], y, Act::group_scale(act, rows[r], g));
            } else {
              c[t][r][q] = vfmaq_f32(c[t][r][q], vcvtq_f32_s32(isum[r]), d);
              c[t][r][q] = vfmaq_n_f32(c[t][r][q], m, gsum[r]);
            }
          }
        }
    }
    if constexpr (!Act::kGroupScale)
      for (int r = 0; r < MR; ++r)
        for (int t = 0; t < NM; ++t)
          for (int q = 0; q < 4; ++q) c[t][r][q] = vmulq_n_f32(c[t][r][q], Act::row_scale(act, rows[r]));
    store_acc(c, acc);
  }
};

template <class Tile, int MR>
inline void gateup_block(const GateUpArgs& a, const uint8_t* const* w, int p, int i0) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a.rows ? a.rows[i0 + r] : i0 + r;
  float32x4_t acc[2][MR][4];
  Tile::template compute<2, MR>(w, a.act.Kp, a.act, rows, acc);
  // h[i, n] = gated(gate[n] . x, up[n] . x)
  for (int r = 0; r < MR; ++r) {
    float* h = a.h + a.ldh * size_t(i0 + r) + p * kPanelN;
    for (int q = 0; q < 4; ++q) vst1q_f32(h + 4 * q, gated(acc[0][r][q], acc[1][r][q], a.glu, p * kPanelN + 4 * q));
  }
}

// one block of exactly n <= R rows starting at row i
template <class Tile, int R>
inline void gateup_rows(const GateUpArgs& a, const uint8_t* const* w, int p, int i, int n) {
  if constexpr (R > 0) {
    if (n == R) gateup_block<Tile, R>(a, w, p, i);
    else gateup_rows<Tile, R - 1>(a, w, p, i, n);
  }
}

template <class Tile>
void gateup(const GateUpArgs& a) {
  constexpr int MR = Tile::max_rows(2);
  const int blocks = (a.m + MR - 1) / MR;
  const size_t pb = a.gate->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      gateup_rows<Tile, MR>(a, w, p, i, n);
    }
  }
}

// NP adjacent panels (p, p+1, ...) as the Tile's NP matrices: each activation load then feeds NP
// panels' multiply-adds instead of one.
template <class Tile, int NP, int MR>
inline void down_block(const DownArgs& a, const uint8_t* const* w, int p, int i0) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = i0 + r;
  // the output lines the epilogue updates: tokens are scattered over out, and their lines have
  // usually left the caches since the previous expert (as avx512_driver.h)
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < NP; ++t)
      __builtin_prefetch(a.out + a.ldo * size_t(a.tok[i0 + r]) + (p + t) * kPanelN, /*rw=*/1, /*locality=*/3);
  float32x4_t acc[NP][MR][4];
  Tile::template compute<NP, MR>(w, a.act.Kp, a.act, rows, acc);
  // out[tok[i], n] += weight[i] * y[i, n]
  for (int r = 0; r < MR; ++r) {
    const float weight = a.weight[i0 + r];
    for (int t = 0; t < NP; ++t) {
      float* o = a.out + a.ldo * size_t(a.tok[i0 + r]) + (p + t) * kPanelN;
      for (int q = 0; q < 4; ++q) vst1q_f32(o + 4 * q, vfmaq_n_f32(vld1q_f32(o + 4 * q), acc[t][r][q], weight));
    }
  }
}

// one block of exactly n <= R rows of NP panels starting at row i
template <class Tile, int NP, int R>
inline void down_rows(const DownArgs& a, const uint8_t* const* w, int p, int i, int n) {
  if constexpr (R > 0) {
    if (n == R) down_block<Tile, NP, R>(a, w, p, i);
    else down_rows<Tile, NP, R - 1>(a, w, p, i, n);
  }
}

template <class Tile, int NP>
inline void down_panels(const DownArgs& a, int p) {
  const size_t pb = a.down->panel_bytes;
  const uint8_t* w[NP];
  for (int t = 0; t < NP; ++t) w[t] = a.down->data + pb * (p + t);
  constexpr int MR = Tile::max_rows(NP);
  const int blocks = (a.m + MR - 1) / MR;
  for (int b = 0; b < blocks; ++b) {
    const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
    down_rows<Tile, NP, MR>(a, w, p, i, n);
  }
}

template <class Tile>
void down(const DownArgs& a) {
  constexpr int NP = Tile::down_panels;
  int p = a.p0;
  for (; p + NP <= a.p1; p += NP) down_panels<Tile, NP>(a, p);
  for (; p < a.p1; ++p) down_panels<Tile, 1>(a, p);
}

}  // namespace
}  // namespace kt::neon
