// AVX512 drivers shared by the avx512, avx512_vnni and avx512_bf16 kernel files.
// Everything here has internal linkage: each kernel TU is compiled with its own ISA flags, and a
// shared inline symbol could otherwise be resolved to a copy that uses instructions the host lacks.
//
// A Tile policy computes an MR x 16 block of fp32 dot products for NM matrices (2: gate and up,
// 1: down) over the whole padded K:
//   template <int NM, int MR> static void compute(const uint8_t* const* w, int Kp,
//                                                 const ActView& act, const int* rows,
//                                                 const NextPanels& pf, __m512 (&acc)[NM][MR]);
// A Tile whose steps read 64 bytes per matrix may prefetch pf (kernels/next_panels.h); the others
// ignore it.
// Tile::max_rows(NM) is its row block for NM matrices (accumulators must fit the 32 zmm), and
// Tile::down_panels how many adjacent panels the down stage computes at once (1, 2 or 4).
// The drivers walk panels, then rows in blocks of at most MR (kernels/row_blocks.h), and fuse
// the epilogues: h = silu(g) * u for gate/up, out += weight * y for down.
#pragma once
#include <immintrin.h>

#include "kernels/next_panels.h"
#include "kernels/row_blocks.h"
#include "kt/kernels.h"

namespace kt::avx512 {
namespace {

// For row block `block` of `blocks` (each one K pass): its slice of the panels at next[t] (t < nm).
// With one block (decode), the block's own stream kStreamAhead ahead instead (cur[t]): faster at
// decode than whole next panels or nothing, for every format and shape measured
// (docs/benchmarks/notes.md, "Prefetch in the vector kernels").
inline NextPanels next_panels(const uint8_t* const* cur, const uint8_t* const* next, int nm, size_t panel_bytes,
                              int block, int blocks) {
  if (blocks < 2) return stream_ahead(cur, nm, kStreamAhead);
  return next_panel_slice(next, nm, panel_bytes, block, blocks);
}

// exp(x) = 2^n * e^r, n = round(x / ln2), |r| <= ln2/2; Taylor to degree 7 (rel. error < 1e-8
// before fp32 rounding). +inf above ln(FLT_MAX), where fp32's exp overflows, as the reference's
// std::exp: silu(-inf) and an infinite u times silu's -0 are then NaN, as in the reference and torch.
inline __m512 exp_ps(__m512 x) {
  const __mmask16 overflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpOverflow), _CMP_GT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_mask_blend_ps(overflow, _mm512_scalef_ps(p, n), _mm512_set1_ps(__builtin_inff()));
}

// silu(g) * u = g * u / (1 + exp(-g))
inline __m512 silu_mul(__m512 g, __m512 u) {
  __m512 den = _mm512_add_ps(_mm512_set1_ps(1.f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g)));
  return _mm512_div_ps(_mm512_mul_ps(g, u), den);
}

// The stage-1 epilogue of the 16 channels n .. n + 15: silu(g) * u, or as glu says (GluParams).
// The data is minps/maxps's second operand, which they return when either is NaN.
inline __m512 gated(__m512 g, __m512 u, const GluParams* glu, int n) {
  if (!glu) return silu_mul(g, u);
  if (glu->gate_bias) g = _mm512_add_ps(g, _mm512_loadu_ps(glu->gate_bias + n));
  if (glu->up_bias) u = _mm512_add_ps(u, _mm512_loadu_ps(glu->up_bias + n));
  const __m512 lim = _mm512_set1_ps(glu->limit);
  g = _mm512_min_ps(lim, g);
  u = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), lim), _mm512_min_ps(lim, u));
  if (glu->alpha == 0.f) return silu_mul(g, u);
  // g sigmoid(alpha g) (u + 1) = g (u + 1) / (1 + exp(-alpha g))
  const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.f), exp_ps(_mm512_mul_ps(_mm512_set1_ps(-glu->alpha), g)));
  return _mm512_div_ps(_mm512_mul_ps(g, _mm512_add_ps(u, _mm512_set1_ps(1.f))), den);
}

template <class Tile, int MR>
inline void gateup_block(const GateUpArgs& a, const uint8_t* const* w, int p, int i0, const NextPanels& pf) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a.rows ? a.rows[i0 + r] : i0 + r;
  __m512 acc[2][MR];
  Tile::template compute<2, MR>(w, a.act.Kp, a.act, rows, pf, acc);
  for (int r = 0; r < MR; ++r)
    _mm512_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN, gated(acc[0][r], acc[1][r], a.glu, p * kPanelN));
}

// one block of exactly n <= R rows starting at row i
template <class Tile, int R>
inline void gateup_rows(const GateUpArgs& a, const uint8_t* const* w, int p, int i, int n, const NextPanels& pf) {
  if constexpr (R > 0) {
    if (n == R) gateup_block<Tile, R>(a, w, p, i, pf);
    else gateup_rows<Tile, R - 1>(a, w, p, i, n, pf);
  }
}

template <class Tile>
void gateup(const GateUpArgs& a) {
  constexpr int MR = Tile::max_rows(2);
  const int blocks = (a.m + MR - 1) / MR;
  const size_t pb = a.gate->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    const uint8_t* next[2] = {nullptr, nullptr};
    if (p + 1 < a.p1) next[0] = w[0] + pb, next[1] = w[1] + pb;
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      gateup_rows<Tile, MR>(a, w, p, i, n, next_panels(w, next, 2, pb, b, blocks));
    }
  }
}

// NP adjacent panels (p, p+1, ...) as the Tile's NP matrices: each activation broadcast then
// feeds NP multiply-adds instead of one (with NP = 1 the broadcasts match the dot products one
// for one, and the down stage ran at half the rate of gate/up).
template <class Tile, int NP, int MR>
inline void down_block(const DownArgs& a, const uint8_t* const* w, int p, int i0, const NextPanels& pf) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = i0 + r;
  // the output lines the epilogue updates: tokens are scattered over out, and their lines have
  // usually left L1 and L2 since the previous expert (docs/benchmarks/notes.md)
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < NP; ++t)
      _mm_prefetch(reinterpret_cast<const char*>(a.out + a.ldo * a.tok[i0 + r] + (p + t) * kPanelN), _MM_HINT_T0);
  __m512 acc[NP][MR];
  Tile::template compute<NP, MR>(w, a.act.Kp, a.act, rows, pf, acc);
  for (int r = 0; r < MR; ++r) {
    const __m512 weight = _mm512_set1_ps(a.weight[i0 + r]);
    for (int t = 0; t < NP; ++t) {
      float* o = a.out + a.ldo * a.tok[i0 + r] + (p + t) * kPanelN;
      _mm512_storeu_ps(o, _mm512_fmadd_ps(weight, acc[t][r], _mm512_loadu_ps(o)));
    }
  }
}

// one block of exactly n <= R rows of NP panels starting at row i
template <class Tile, int NP, int R>
inline void down_rows(const DownArgs& a, const uint8_t* const* w, int p, int i, int n, const NextPanels& pf) {
  if constexpr (R > 0) {
    if (n == R) down_block<Tile, NP, R>(a, w, p, i, pf);
    else down_rows<Tile, NP, R - 1>(a, w, p, i, n, pf);
  }
}

template <class Tile, int NP>
inline void down_panels(const DownArgs& a, int p) {
  const size_t pb = a.down->panel_bytes;
  const uint8_t* w[NP];
  for (int t = 0; t < NP; ++t) w[t] = a.down->data + pb * (p + t);
  constexpr int MR = Tile::max_rows(NP);
  const int blocks = (a.m + MR - 1) / MR;
  // the next group of NP panels, else (this call's last group) the next matrix's first ones: the
  // caller runs experts one after another over the same panels, and each would otherwise start
  // with a group read on demand from DRAM
  const uint8_t* next[NP] = {};
  for (int t = 0; t < NP; ++t) {
    if (p + 2 * NP <= a.p1) next[t] = w[t] + NP * pb;
    else if (a.next) next[t] = a.next + pb * (a.p0 + t);
  }
  for (int b = 0; b < blocks; ++b) {
    const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
    down_rows<Tile, NP, MR>(a, w, p, i, n, next_panels(w, next, NP, pb, b, blocks));
  }
}

template <class Tile>
void down(const DownArgs& a) {
  constexpr int NP = Tile::down_panels;
  int p = a.p0;
  for (; p + NP <= a.p1; p += NP) down_panels<Tile, NP>(a, p);
  for (; p < a.p1; ++p) down_panels<Tile, 1>(a, p);
}

inline __m512i bcast32(const void* p) {
  int v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

}  // namespace
}  // namespace kt::avx512
