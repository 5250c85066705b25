// The int4_g32 quantizer vectorized across groups, written once over a lane policy V and included
// by the ISA files kernels/avx2/quant_int4g32_avx2.cpp (8 lanes) and
// kernels/avx512/quant_int4g32_avx512.cpp (16 lanes). Everything here has internal linkage: each
// includer is compiled with its own ISA flags.
//
// [NOTE] Lane l of every vector runs int4g32_quantize_ref's algorithm (cpp/src/formats/int4_g32.cpp)
// on its own group of 32 k, operation by operation, so the output (q, d, m) is bit-identical to
// the reference for every input, NaN and Inf included. What makes that hold:
//   - The groups are transposed (V::transpose): wt[i][l] is value i of lane l's group, and a group
//     shorter than 32 is padded with its last value, as the reference pads it; padding is masked
//     out of every sum (`valid`), and the min/max scans see a value twice, which changes nothing.
//   - Sums of non-integers (sum w, sum q w, the squared error) keep the reference's SSE2 order:
//     four accumulators, value i into accumulator i % 4 in increasing i, then (a0 + a2) + (a1 + a3).
//     (Sums of q and q^2 are sums of integers below 2^24, exact in any order.)
//   - No contraction: these files build with -ffp-contract=off. The two FMAs below are exact
//     rewrites: q * q (q <= 15) and d * q with d an fp16 value (11 significant bits) times q
//     (4 bits) are exact in fp32, so fma(a, b, c) rounds once exactly where mul-then-add does.
//   - round_half_even(t) = (t + 1.5 * 2^23) - 1.5 * 2^23 equals round-to-nearest-even (roundscale
//     / roundps) for the clamped t in [0, 15].
//   - Divisions stay divisions (1 / d, the least-squares solve), and min/max keep the reference's
//     operand order, which decides NaN and signed-zero results: V::min(a, b) = a < b ? a : b and
//     V::max(a, b) = a > b ? a : b like minps/maxps.
//   - fp16 rounding is vcvtps2ph (round to nearest even, like f32_to_f16); a NaN becomes
//     sign | 0x7e00 as f32_to_f16 makes it (V::store_f16).
//   - Every branch of the reference becomes a lane mask: `hi == lo` returns the initial fit,
//     `det <= 0` and `!(nd > 0)` end a lane's refit loop, `err < best` picks the fit.
// About 10x the reference's speed with 8 lanes (benchmarks/bench_quantize.py; figures in
// docs/benchmarks/notes.md). The passes over a block's 32 values (6 least-squares, 3 error) are
// bound by the vector ALUs, about 9 operations per value and pass; an algorithm with fewer passes
// would change the results.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kt {
namespace {

constexpr int kGroup = 32;

// The least-squares fit of the reference's fit_group for V::L groups at once.
//   wt:   [32][L] transposed values (padding repeats a group's last value)
//   len:  [L] real values per group (1..32); only read when Partial
//   bd, bm: [L] the chosen d and m, as fp32 values of fp16 numbers; bi: [L] d > 0 ? 1 / d : 0
template <class V, bool Partial>
void fit_lanes(const float* wt, const int32_t* len, float* bd, float* bm, float* bi) {
  using F = typename V::F;
  using M = typename V::M;
  constexpr int L = V::L;
  const F zero = V::zero(), fifteen = V::set1(15.f);
  auto W = [&](int i) { return V::load(wt + i * L); };
  M valid[kGroup];
  if (Partial)
    for (int i = 0; i < kGroup; ++i) valid[i] = V::below(len, i);
  alignas(64) float nf[L];
  for (int l = 0; l < L; ++l) nf[l] = Partial ? float(len[l]) : float(kGroup);
  const F n = V::load(nf);
  auto hsum4 = [](const F* a) { return V::add(V::add(a[0], a[2]), V::add(a[1], a[3])); };

  // q = round_half_even(clamp((w - m) * inv, 0, 15)), inv = d > 0 ? 1 / d : 0   (quantize_with)
  auto inverse = [&](F d) { return V::select(V::gt(d, zero), V::div(V::set1(1.f), d), zero); };
  auto quant = [&](F w, F m, F inv) {
    return V::round(V::min(V::max(V::mul(V::sub(w, m), inv), zero), fifteen));
  };
  // squared_error of w ~ d q + m over the real values, d in fp16
  auto squared_error = [&](F d, F m) {
    const F inv = inverse(d);
    F acc[4] = {zero, zero, zero, zero};
    for (int i = 0; i < kGroup; i += 4) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const F w = W(i + j);
        F e = V::sub(V::fmadd(d, quant(w, m, inv), m), w);  // d * q exact: fma = mul, add
        if (Partial) e = V::keep(valid[i + j], e);
        acc[j] = V::add(acc[j], V::mul(e, e));
      }
    }
    return hsum4(acc);
  };

  // range of the real values
  F lo = W(0), hi = lo;
  for (int i = 1; i < kGroup; ++i) lo = V::min(W(i), lo), hi = V::max(W(i), hi);

  // initial fit: d = 0, m = lo in fp16; every q is 0, so e = (0 * 0 + m) - w
  F best_d = zero, best_m = V::f16_round(lo), best_err;
  {
    const F c = V::add(V::mul(zero, zero), best_m);
    F acc[4] = {zero, zero, zero, zero};
    for (int i = 0; i < kGroup; i += 4) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        F e = V::sub(c, W(i + j));
        if (Partial) e = V::keep(valid[i + j], e);
        acc[j] = V::add(acc[j], V::mul(e, e));
      }
    }
    best_err = hsum4(acc);
  }
  const M live = V::mnot(V::eq(hi, lo));  // the reference returns the initial fit when hi == lo
  if (V::any(live)) {
    F acc[4] = {zero, zero, zero, zero};
    for (int i = 0; i < kGroup; i += 4) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[j] = V::add(acc[j], Partial ? V::keep(valid[i + j], W(i + j)) : W(i + j));
    }
    const F sw = hsum4(acc);
    const float shrinks[3] = {1.0f, 0.9f, 0.8f};
    for (float shrink : shrinks) {
      const F s = V::set1(shrink);
      F m = V::mul(lo, s), d = V::div(V::mul(V::sub(hi, lo), s), V::set1(15.f));
      M active = live;  // lanes still in the refit loop
      for (int it = 0; it < 2 && V::any(active); ++it) {
        // least squares for w ~ d q + m over the real values
        const F inv = inverse(d);
        // sums of q and q^2: V::kIntAcc chains (any order is exact), sum of q w: the reference's 4
        constexpr int A = V::kIntAcc;
        F q1[A], qq[A], qw[4] = {zero, zero, zero, zero};
        for (int a = 0; a < A; ++a) q1[a] = qq[a] = zero;
        for (int i = 0; i < kGroup; i += 4) {
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const F w = W(i + j);
            F q = quant(w, m, inv);
            if (Partial) q = V::keep(valid[i + j], q);
            q1[j % A] = V::add(q1[j % A], q);
            qq[j % A] = V::fmadd(q, q, qq[j % A]);  // q * q exact: fma = mul, add
            qw[j] = V::add(qw[j], V::mul(q, w));
          }
        }
        F s_q = q1[0], s_qq = qq[0];
        for (int a = 1; a < A; ++a) s_q = V::add(s_q, q1[a]), s_qq = V::add(s_qq, qq[a]);
        const F s_qw = hsum4(qw);
        const F det = V::sub(V::mul(n, s_qq), V::mul(s_q, s_q));
        active = V::mand(active, V::mnot(V::le(det, zero)));
        const F nd = V::div(V::sub(V::mul(n, s_qw), V::mul(s_q, sw)), det);
        active = V::mand(active, V::gt(nd, zero));
        d = V::select(active, nd, d);
        m = V::select(active, V::div(V::sub(sw, V::mul(nd, s_q)), n), m);
      }
      const F dh = V::f16_round(d), mh = V::f16_round(m);
      const F err = squared_error(dh, mh);
      const M better = V::mand(live, V::lt(err, best_err));
      best_d = V::select(better, dh, best_d);
      best_m = V::select(better, mh, best_m);
      best_err = V::select(better, err, best_err);
    }
  }
  V::store(bd, best_d);
  V::store(bm, best_m);
  V::store(bi, inverse(best_d));
}

// int4g32_quantize_ref on V::L groups at a time, taken in row-major order over all N x groups
// (consecutive lanes may belong to different rows): d and m of L consecutive groups are L
// consecutive fp16 values of the outputs.
template <class V>
void quantize_int4g32_lanes(const float* w, int N, int K, uint8_t* qout, uint16_t* dout, uint16_t* mout) {
  constexpr int L = V::L;
  const int groups = (K + kGroup - 1) / kGroup, tail = K - (groups - 1) * kGroup;  // tail: 1..32
  const size_t total = size_t(N) * size_t(groups);
  alignas(64) float stage[L * kGroup];  // short groups, padded as the reference pads them
  alignas(64) float zeros[kGroup] = {};  // lanes past the last group: a constant group, cheapest fit
  alignas(64) float wt[kGroup * L];
  alignas(64) int32_t len[L];
  alignas(64) float bd[L], bm[L], bi[L];
  alignas(64) uint16_t dh[L], mh[L];
  const float* src[L];  // each lane's 32 values
  uint8_t* dst[L];      // each lane's first q
  for (size_t f0 = 0; f0 < total; f0 += L) {
    const int cnt = total - f0 < size_t(L) ? int(total - f0) : L;
    bool partial = false;
    size_t n = f0 / groups;  // row and group of lane 0, then stepped lane by lane
    int g = int(f0 - n * groups);
    for (int l = 0; l < L; ++l, g = g + 1 == groups ? (++n, 0) : g + 1) {
      len[l] = kGroup;
      if (l >= cnt) {
        src[l] = zeros;
        continue;
      }
      const size_t at = n * K + size_t(g) * kGroup;
      src[l] = w + at;
      dst[l] = qout + at;
      if (g == groups - 1 && tail < kGroup) {
        float* pad = stage + l * kGroup;
        for (int i = 0; i < kGroup; ++i) pad[i] = src[l][i < tail ? i : tail - 1];
        src[l] = pad;
        len[l] = tail;
        partial = true;
      }
    }
    V::transpose(src, wt);
    if (partial) fit_lanes<V, true>(wt, len, bd, bm, bi);
    else fit_lanes<V, false>(wt, len, bd, bm, bi);
    V::store_f16(dh, V::load(bd));
    V::store_f16(mh, V::load(bm));
    std::memcpy(dout + f0, dh, sizeof(uint16_t) * cnt);
    std::memcpy(mout + f0, mh, sizeof(uint16_t) * cnt);
    // q = round_half_even(clamp((w - m) * inv, 0, 15)) with the chosen d and m, group by group
    for (int l = 0; l < cnt; ++l) {
      if (len[l] == kGroup) {
        V::quantize_group(src[l], bm[l], bi[l], dst[l]);
      } else {
        alignas(64) uint8_t q[kGroup];
        V::quantize_group(src[l], bm[l], bi[l], q);
        std::memcpy(dst[l], q, size_t(len[l]));
      }
    }
  }
}

}  // namespace
}  // namespace kt
