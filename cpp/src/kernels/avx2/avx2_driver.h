// AVX2 drivers shared by the avx2 kernel files (AVX2 + FMA + F16C, 8 fp32 lanes per ymm).
// Everything here has internal linkage: each kernel TU is compiled with its own ISA flags, and a
// shared inline symbol could otherwise be resolved to a copy that uses instructions the host lacks.
//
// A packed panel holds 16 channels, which is two ymm halves: in every format the bytes of channels
// 0-7 are the first 32 bytes of each 64-byte step and channels 8-15 the last 32 (per-channel
// scales likewise split in two). With 16 ymm registers an MR = 4 block of gate and up for all 16
// channels would need 16 accumulators alone, so a Tile may run the K loop of large blocks once
// per half (Tile::halves: the bf16 tile does). One pass reads every 64-byte line once rather than
// twice and keeps the memory busy throughout; the int tiles let gate and up take turns, so that
// the registers hold one matrix's sums, and run every block in one pass.
//
// A Tile policy computes an MR x (8 * NH) block of fp32 dot products for NM matrices (2: gate and
// up, 1: down) over the whole padded K, for the halves h0 .. h0 + NH - 1 of the panel, and touches
// pf once per 64-byte step of each matrix (kernels/next_panels.h):
//   template <int NM, int MR, int NH> static void compute(const uint8_t* const* w, int h0, int Kp,
//                                                         const ActView& act, const int* rows,
//                                                         const NextPanels& pf,
//                                                         __m256 (&acc)[NM][MR][NH]);
// Tile::max_rows(NM) is the row block the Tile takes for NM matrices (at most 4), and
// Tile::halves(NM, MR) the halves per K pass of such a block (1 or 2).
// The drivers walk panels, then rows in blocks of at most MR (kernels/row_blocks.h),
// then the halves (the block's activation rows stay in L1 between passes), and fuse the epilogues:
// h = silu(g) * u for gate/up, out += weight * y for down. A panel that takes more than one K pass
// has its passes prefetch the next panel, each a slice of it; one computed in a single pass
// prefetches its own stream kStreamAhead bytes ahead.
#pragma once
#include <immintrin.h>

#include "kernels/next_panels.h"
#include "kernels/row_blocks.h"
#include "kt/kernels.h"

namespace kt::avx2 {
namespace {

constexpr int kHalfN = 8;  // channels per ymm half of a panel

// An empty asm that makes v an opaque register value here. Integer adds are associative, so GCC
// rewrites the accumulation chains of an unrolled loop into trees, which keeps far more values
// live than 16 ymm registers hold and spills the accumulators; this pins the chain order.
inline void keep_in_register(__m256i& v) { __asm__("" : "+x"(v)); }

// exp(x) = 2^n * e^r, n = round(x / ln2), |r| <= ln2/2; Taylor to degree 7 (rel. error < 1e-8
// before fp32 rounding). The clamp keeps 2^n * e^r a normal float, so 2^n can be applied by adding
// n to the exponent field of e^r (AVX2 has no scalef). +inf above ln(FLT_MAX), as std::exp
// (avx512_driver.h's exp_ps says why).
inline __m256 exp_ps(__m256 x) {
  const __m256 overflow = _mm256_cmp_ps(x, _mm256_set1_ps(kExpOverflow), _CMP_GT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 split in a short high part (n * hi is exact) and the rest
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  // n in [-126, 128] and p in [0.7, 1.42]: the biased exponent of p * 2^n stays in [1, 254]
  __m256i pow2n = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 e = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), pow2n));
  return _mm256_blendv_ps(e, _mm256_set1_ps(__builtin_inff()), overflow);
}

// silu(g) * u = g * u / (1 + exp(-g))
inline __m256 silu_mul(__m256 g, __m256 u) {
  __m256 den = _mm256_add_ps(_mm256_set1_ps(1.f), exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g)));
  return _mm256_div_ps(_mm256_mul_ps(g, u), den);
}

// The stage-1 epilogue of the 8 channels n .. n + 7: silu(g) * u, or as glu says (GluParams).
// The data is minps/maxps's second operand, which they return when either is NaN.
inline __m256 gated(__m256 g, __m256 u, const GluParams* glu, int n) {
  if (!glu) return silu_mul(g, u);
  if (glu->gate_bias) g = _mm256_add_ps(g, _mm256_loadu_ps(glu->gate_bias + n));
  if (glu->up_bias) u = _mm256_add_ps(u, _mm256_loadu_ps(glu->up_bias + n));
  const __m256 lim = _mm256_set1_ps(glu->limit);
  g = _mm256_min_ps(lim, g);
  u = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), _mm256_min_ps(lim, u));
  if (glu->alpha == 0.f) return silu_mul(g, u);
  // g sigmoid(alpha g) (u + 1) = g (u + 1) / (1 + exp(-alpha g))
  const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.f), exp_ps(_mm256_mul_ps(_mm256_set1_ps(-glu->alpha), g)));
  return _mm256_div_ps(_mm256_mul_ps(g, _mm256_add_ps(u, _mm256_set1_ps(1.f))), den);
}

// K passes over a panel of a block of n rows, NM matrices
template <class Tile, int NM>
constexpr int block_passes(int n) { return 2 / Tile::halves(NM, n); }

// K passes over a panel of the blocks of m rows, NM matrices
template <class Tile, int NM>
int panel_passes(int m) {
  const int blocks = (m + Tile::max_rows(NM) - 1) / Tile::max_rows(NM);
  int passes = 0;
  for (int b = 0; b < blocks; ++b)
    passes += block_passes<Tile, NM>(block_start(m, blocks, b + 1) - block_start(m, blocks, b));
  return passes;
}

// What a block needs to prefetch: with one pass over the panel, its stream kStreamAhead ahead;
// with several, pass q of `passes` prefetches the q-th slice of the next panel.
// This brought the AVX2 int4 kernels at m=2 and 3 close to the VNNI kernel's time
// (docs/benchmarks/notes.md, "Prefetch in the vector kernels").
struct PassPrefetch {
  const uint8_t* const* cur;   // this panel per matrix
  const uint8_t* const* next;  // next panel per matrix (nullptr: none)
  size_t panel_bytes;
  int passes;
  int q;  // the block's first pass
  NextPanels at(int nm, int pass) const {
    return passes < 2 ? stream_ahead(cur, nm, kStreamAhead)
                      : next_panel_slice(next, nm, panel_bytes, q + pass, passes);
  }
};

template <class Tile, int MR>
inline void gateup_block(const GateUpArgs& a, const uint8_t* const* w, int p, int i0, const PassPrefetch& pp) {
  constexpr int NH = Tile::halves(2, MR);
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a.rows ? a.rows[i0 + r] : i0 + r;
  for (int h0 = 0; h0 < 2; h0 += NH) {
    __m256 acc[2][MR][NH];
    Tile::template compute<2, MR, NH>(w, h0, a.act.Kp, a.act, rows, pp.at(2, h0 / NH), acc);
    for (int r = 0; r < MR; ++r)
      for (int h = 0; h < NH; ++h)
        _mm256_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN + (h0 + h) * kHalfN,
                         gated(acc[0][r][h], acc[1][r][h], a.glu, p * kPanelN + (h0 + h) * kHalfN));
  }
}

// one block of exactly n <= R rows starting at row i
template <class Tile, int R>
inline void gateup_rows(const GateUpArgs& a, const uint8_t* const* w, int p, int i, int n, const PassPrefetch& pp) {
  if constexpr (R > 0) {
    if (n == R) gateup_block<Tile, R>(a, w, p, i, pp);
    else gateup_rows<Tile, R - 1>(a, w, p, i, n, pp);
  }
}

template <class Tile>
void gateup(const GateUpArgs& a) {
  constexpr int MR = Tile::max_rows(2);
  const int blocks = (a.m + MR - 1) / MR;
  const int passes = panel_passes<Tile, 2>(a.m);
  const size_t pb = a.gate->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    const uint8_t* next[2] = {nullptr, nullptr};
    if (p + 1 < a.p1) next[0] = w[0] + pb, next[1] = w[1] + pb;
    PassPrefetch pp{w, next, pb, passes, 0};
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      gateup_rows<Tile, MR>(a, w, p, i, n, pp);
      pp.q += block_passes<Tile, 2>(n);
    }
  }
}

template <class Tile, int MR>
inline void down_block(const DownArgs& a, const uint8_t* const* w, int p, int i0, const PassPrefetch& pp) {
  constexpr int NH = Tile::halves(1, MR);
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = i0 + r;
  for (int h0 = 0; h0 < 2; h0 += NH) {
    __m256 acc[1][MR][NH];
    Tile::template compute<1, MR, NH>(w, h0, a.act.Kp, a.act, rows, pp.at(1, h0 / NH), acc);
    for (int r = 0; r < MR; ++r) {
      const __m256 weight = _mm256_set1_ps(a.weight[i0 + r]);
      for (int h = 0; h < NH; ++h) {
        float* o = a.out + a.ldo * a.tok[i0 + r] + p * kPanelN + (h0 + h) * kHalfN;
        _mm256_storeu_ps(o, _mm256_fmadd_ps(weight, acc[0][r][h], _mm256_loadu_ps(o)));
      }
    }
  }
}

template <class Tile, int R>
inline void down_rows(const DownArgs& a, const uint8_t* const* w, int p, int i, int n, const PassPrefetch& pp) {
  if constexpr (R > 0) {
    if (n == R) down_block<Tile, R>(a, w, p, i, pp);
    else down_rows<Tile, R - 1>(a, w, p, i, n, pp);
  }
}

template <class Tile>
void down(const DownArgs& a) {
  constexpr int MR = Tile::max_rows(1);
  const int blocks = (a.m + MR - 1) / MR;
  const int passes = panel_passes<Tile, 1>(a.m);
  const size_t pb = a.down->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w[1] = {a.down->data + pb * p};
    // the next panel, else (this call's last) the next matrix's first one: the caller runs experts
    // one after another over the same panels
    const uint8_t* next[1] = {p + 1 < a.p1 ? w[0] + pb : a.next ? a.next + pb * a.p0 : nullptr};
    PassPrefetch pp{w, next, pb, passes, 0};
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      down_rows<Tile, MR>(a, w, p, i, n, pp);
      pp.q += block_passes<Tile, 1>(n);
    }
  }
}

// 4 bytes at p (any alignment) in every 32-bit lane
inline __m256i bcast32(const void* p) {
  int v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

}  // namespace
}  // namespace kt::avx2
