// The sub-block fits of the K-quant quantizers (q2_K, q3_K, q4_K, q5_K, q6_K, iq4_xs): one header
// rather than a copy in each of the six files.
//
// Each quantizer works in two steps:
//   1. per sub-block, a real scale (and minimum) from these fits: a short search of candidate
//      scales around the min/max one, each refit by least squares on its rounded levels;
//   2. per super-block, the fp16 d (and dmin) mapping the largest sub-block scale to the largest
//      integer scale, the sub-block scales rounded against the decoded d, and each weight's level
//      chosen nearest under the scale exactly as dequantize_block decodes it.
// Unweighted squared error throughout: the measured error is that of W x for random x.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kt/formats.h"

namespace kt::kquant {

inline int nearest(float v) { return int(std::nearbyint(v)); }  // halves to even
inline int clampi(int v, int lo, int hi) { return std::min(std::max(v, lo), hi); }

// fp16 bits of v, clamped to the finite fp16 range (an overflowing scale would make the block invalid).
inline uint16_t to_f16(float v) { return f32_to_f16(std::clamp(v, -65504.f, 65504.f)); }

// The integer scale of real scale s against the decoded super-block scale d (0 if d is 0).
inline int int_scale(float s, float d, int lo, int hi) { return d != 0.f ? clampi(nearest(s / d), lo, hi) : 0; }

// ---- asymmetric: x ~ s * q - m,  q in 0..nmax,  s >= 0, m >= 0 -----------------------------------

struct ScaleMin {
  float s, m;
};

// Squared error of x under (s, m) with each q nearest.
inline double error_scale_min(const float* x, int n, int nmax, ScaleMin f) {
  double e = 0;
  for (int i = 0; i < n; ++i) {
    const int q = f.s > 0.f ? clampi(nearest((x[i] + f.m) / f.s), 0, nmax) : 0;
    const double r = double(x[i]) - (double(f.s) * q - f.m);
    e += r * r;
  }
  return e;
}

// The minimum is clipped to <= 0 (m >= 0), as ggml's K-quants do. Candidates: the grid of
// [min, max] with nmax + t levels, t in [-1, 1] (nstep + 1 values), each refit by least squares
// on its q (the intercept kept <= 0); the min/max fit itself is the first candidate.
inline ScaleMin fit_scale_min(const float* x, int n, int nmax, int nstep) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  lo = std::min(lo, 0.f);
  if (!(hi > lo)) return {0.f, -lo};  // constant block (or all >= its clipped minimum 0)
  ScaleMin best{(hi - lo) / nmax, -lo};
  double best_err = error_scale_min(x, n, nmax, best);
  for (int is = 0; is <= nstep; ++is) {
    const float iscale = (float(nmax) - 1.f + 2.f * float(is) / float(nstep)) / (hi - lo);
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const int q = clampi(nearest(iscale * (x[i] - lo)), 0, nmax);
      sq += q, sx += x[i], sqq += double(q) * q, sqx += double(q) * x[i];
    }
    const double den = n * sqq - sq * sq;
    if (den <= 0) continue;  // every q equal: no line to fit
    double s = (n * sqx - sq * sx) / den, b = (sx - s * sq) / n;
    if (b > 0) b = 0, s = sqx / sqq;  // the minimum stays <= 0
    if (!(s > 0)) continue;
    const ScaleMin c{float(s), float(-b)};
    const double e = error_scale_min(x, n, nmax, c);
    if (e < best_err) best = c, best_err = e;
  }
  return best;
}

// ---- symmetric: x ~ s * L[q], L sorted levels (uniform lo..lo+n-1, or iq4's table) ---------------

struct Levels {
  const int8_t* table;  // nullptr: uniform levels lo, lo + 1, ..., lo + n - 1
  int lo, n;
  int value(int i) const { return table ? table[i] : lo + i; }
  int index(float t) const {  // index of the level nearest t
    if (!table) return clampi(nearest(t) - lo, 0, n - 1);
    int a = 0, b = n - 1;  // binary search for the last level whose midpoint below it is < t
    while (a < b) {
      const int m = (a + b + 1) / 2;
      if (t > 0.5f * float(table[m - 1] + table[m])) a = m;
      else b = m - 1;
    }
    return a;
  }
};

// A signed real scale s: candidates map the largest-magnitude weight to the most negative or the most
// positive level times f, f in [0.8, 1.1] (nstep + 1 values each), and each is refit by least squares
// on its levels, s = sum x L / sum L^2; the best keeps the most of sum x^2, (sum x L)^2 / sum L^2.
inline float fit_scale_sym(const float* x, int n, const Levels& L, int nstep) {
  float amax = 0.f, v = 0.f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), v = x[i];
  if (amax == 0.f) return 0.f;
  float best = v / float(L.value(0));
  double best_gain = -1;
  for (const int target : {L.value(0), L.value(L.n - 1)})
    for (int is = 0; is <= nstep; ++is) {
      const float iscale = float(target) * (0.8f + 0.3f * float(is) / float(nstep)) / v;
      double sxl = 0, sll = 0;
      for (int i = 0; i < n; ++i) {
        const int l = L.value(L.index(iscale * x[i]));
        sxl += double(x[i]) * l, sll += double(l) * l;
      }
      if (sll == 0) continue;
      const double gain = sxl * sxl / sll;
      if (gain > best_gain) best_gain = gain, best = float(sxl / sll);
    }
  return best;
}

// The sub-block scale of largest magnitude (signed): it maps to the most negative integer scale.
inline float signed_max(const float* s, int n) {
  float m = 0.f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(s[j]) > std::fabs(m)) m = s[j];
  return m;
}

// ---- the super-block scales ---------------------------------------------------------------------

// Candidates for the fp16 super-block scale that maps the largest sub-block scale smax to the integer
// scale top (63, 15, -32, -128): smax / top, and where that is subnormal in fp16 (few significant
// bits, or 0: blocks of tiny weights) also smax / (top / 2^i) while |top / 2^i| >= 1: coarser
// integer scales but a d that fp16 holds. Writes at most 8 to out; returns the count.
inline int super_scale_candidates(float smax, float top, uint16_t* out) {
  int n = 0;
  out[n++] = smax != 0.f ? to_f16(smax / top) : 0;  // 0, not -0, for a zero block
  if ((out[0] & 0x7c00u) == 0 && smax != 0.f)
    for (float t = top / 2.f; std::fabs(t) >= 1.f; t /= 2.f) out[n++] = to_f16(smax / t);
  return n;
}

// encode(d, dmin, &block) for each candidate pair; *b gets the block of least squared error (as
// dequantize_block decodes it). One candidate each (the usual case): encoded once, not measured.
template <class Block, class Encode>
void encode_best(const float* x, const uint16_t* dc, int nd, const uint16_t* mc, int nm, Block* b, Encode encode) {
  if (nd == 1 && nm == 1) return encode(dc[0], mc[0], b);
  double best = std::numeric_limits<double>::infinity();
  Block tmp;
  float y[Block::kK];
  for (int i = 0; i < nd; ++i)
    for (int j = 0; j < nm; ++j) {
      encode(dc[i], mc[j], &tmp);
      dequantize_block(tmp, y);
      double e = 0;
      for (int k = 0; k < Block::kK; ++k) e += (double(x[k]) - y[k]) * (double(x[k]) - y[k]);
      if (e < best) best = e, *b = tmp;
    }
}

// ---- integer scales and levels of one sub-block ------------------------------------------------

// The integer scale and min of a sub-block against the decoded d and dmin, and its levels q: the
// rounded pair and its neighbours (+-1 each, within 0..imax), each weight at its nearest level under
// dl = d * sc, ml = dmin * m as dequantize_block forms them (w = dl * q - ml); least squared error wins.
struct IntScaleMin {
  int sc, m;
};
inline IntScaleMin encode_scale_min(const float* x, int n, int nmax, ScaleMin f, float d, float dmin, int imax,
                                    uint8_t* q) {
  const int sc0 = int_scale(f.s, d, 0, imax), m0 = int_scale(f.m, dmin, 0, imax);
  IntScaleMin best{sc0, m0};
  double best_err = std::numeric_limits<double>::infinity();
  for (int sc = std::max(sc0 - 1, 0); sc <= std::min(sc0 + 1, imax); ++sc)
    for (int m = std::max(m0 - 1, 0); m <= std::min(m0 + 1, imax); ++m) {
      const float dl = d * float(sc), ml = dmin * float(m);
      double e = 0;
      for (int i = 0; i < n; ++i) {
        const int l = dl > 0.f ? clampi(nearest((x[i] + ml) / dl), 0, nmax) : 0;
        const double r = double(x[i]) - (dl * float(l) - ml);
        e += r * r;
      }
      if (e < best_err) best_err = e, best = {sc, m};
    }
  const float dl = d * float(best.sc), ml = dmin * float(best.m);
  for (int i = 0; i < n; ++i) q[i] = uint8_t(dl > 0.f ? clampi(nearest((x[i] + ml) / dl), 0, nmax) : 0);
  return best;
}

// The signed integer scale of a sub-block against the decoded d (within lo..hi), and its level
// indices idx: the rounded scale and its neighbours, each weight at its nearest level under
// dl = d * sc as dequantize_block forms it (w = dl * L[idx]); least squared error wins.
inline int encode_scale(const float* x, int n, const Levels& L, float s, float d, int lo, int hi, uint8_t* idx) {
  const int sc0 = int_scale(s, d, lo, hi);
  int best = sc0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int sc = std::max(sc0 - 1, lo); sc <= std::min(sc0 + 1, hi); ++sc) {
    const float dl = d * float(sc);
    double e = 0;
    for (int i = 0; i < n; ++i) {
      const int l = L.value(L.index(dl != 0.f ? x[i] / dl : 0.f));
      const double r = double(x[i]) - dl * float(l);
      e += r * r;
    }
    if (e < best_err) best_err = e, best = sc;
  }
  const float dl = d * float(best);
  for (int i = 0; i < n; ++i) idx[i] = uint8_t(L.index(dl != 0.f ? x[i] / dl : 0.f));
  return best;
}

// The inverse of q4K_scale_min (kt/gguf_blocks.h): 6-bit sc and m of sub-block j into the 12 scale
// bytes of q4_K / q5_K (s zeroed first).
inline void q4K_set_scale_min(int j, int sc, int m, uint8_t* s) {
  if (j < 4) {
    s[j] |= uint8_t(sc), s[j + 4] |= uint8_t(m);
  } else {
    s[j + 4] = uint8_t((sc & 15) | (m & 15) << 4);
    s[j - 4] |= uint8_t((sc >> 4) << 6), s[j] |= uint8_t((m >> 4) << 6);
  }
}

}  // namespace kt::kquant
