// Four float lanes for the reference quantizers: SSE2 on x86-64 (every such CPU has it; the
// compiler does not vectorize the clamps and fp sums by itself), plain C++ elsewhere. Both give the
// same bits: each operation is one IEEE single-precision operation per lane, min/max keep SSE's
// operand order (min(a, b) = a < b ? a : b, which decides NaN and signed-zero results), and the
// files that use this build with -ffp-contract=off, so no multiply-add is fused on any machine.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace kt {
namespace lanes4 {

#if defined(__x86_64__)

using F4 = __m128;
inline F4 set1(float v) { return _mm_set1_ps(v); }
inline F4 zero() { return _mm_setzero_ps(); }
inline F4 load(const float* p) { return _mm_loadu_ps(p); }
inline F4 load_bits(const uint32_t* p) { return _mm_castsi128_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline F4 add(F4 a, F4 b) { return _mm_add_ps(a, b); }
inline F4 sub(F4 a, F4 b) { return _mm_sub_ps(a, b); }
inline F4 mul(F4 a, F4 b) { return _mm_mul_ps(a, b); }
inline F4 min(F4 a, F4 b) { return _mm_min_ps(a, b); }
inline F4 max(F4 a, F4 b) { return _mm_max_ps(a, b); }
inline F4 bit_and(F4 a, F4 b) { return _mm_and_ps(a, b); }
// (v0 + v2) + (v1 + v3)
inline float hsum(F4 v) {
  const F4 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

#else

struct F4 {
  float v[4];
};
template <class Op>
inline F4 each(F4 a, F4 b, Op op) {
  F4 r;
  for (int i = 0; i < 4; ++i) r.v[i] = op(a.v[i], b.v[i]);
  return r;
}
inline F4 set1(float v) { return F4{{v, v, v, v}}; }
inline F4 zero() { return set1(0.f); }
inline F4 load(const float* p) {
  F4 r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline F4 load_bits(const uint32_t* p) { return load(reinterpret_cast<const float*>(p)); }
inline F4 add(F4 a, F4 b) { return each(a, b, [](float x, float y) { return x + y; }); }
inline F4 sub(F4 a, F4 b) { return each(a, b, [](float x, float y) { return x - y; }); }
inline F4 mul(F4 a, F4 b) { return each(a, b, [](float x, float y) { return x * y; }); }
inline F4 min(F4 a, F4 b) { return each(a, b, [](float x, float y) { return x < y ? x : y; }); }
inline F4 max(F4 a, F4 b) { return each(a, b, [](float x, float y) { return x > y ? x : y; }); }
inline F4 bit_and(F4 a, F4 b) {
  return each(a, b, [](float x, float y) {
    uint32_t u, w;
    std::memcpy(&u, &x, 4);
    std::memcpy(&w, &y, 4);
    u &= w;
    float r;
    std::memcpy(&r, &u, 4);
    return r;
  });
}
inline float hsum(F4 v) { return (v.v[0] + v.v[2]) + (v.v[1] + v.v[3]); }

#endif

}  // namespace lanes4
}  // namespace kt
