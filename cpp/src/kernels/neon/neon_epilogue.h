// The stage-1 epilogue of the aarch64 kernels (neon, neon_dotprod, neon_i8mm, neon_bf16), four
// channels per float32x4_t: silu(g) * u, or the GluParams variants, as ref_driver.h's `gated`.
// Baseline ARMv8-A NEON only (FMLA, FRINTN, FDIV), so every aarch64 kernel file can include it;
// internal linkage, like every ISA header (a shared inline symbol could resolve to a copy built
// with another file's -march).
#pragma once
#include <arm_neon.h>

#include "kt/kernels.h"

namespace kt::neon {
namespace {

// exp(x) = 2^n * e^r, n = round(x / ln2), |r| <= ln2/2 (ln2 split in two so n * ln2 is exact);
// Taylor to degree 7 (rel. error < 1e-8 before fp32 rounding), as avx512_driver.h's exp_ps.
// 2^n is added to p's exponent field: x clamped to [-87.3, 88.7] keeps the result normal (p >= 1
// where n = -126) and finite (p < 1 where n = 128). A NaN x stays NaN: FMIN/FMAX return NaN.
// +inf above ln(FLT_MAX), as std::exp (avx512_driver.h's exp_ps says why).
inline float32x4_t exp_f32(float32x4_t x) {
  const uint32x4_t overflow = vcgtq_f32(x, vdupq_n_f32(kExpOverflow));
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.7f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504089f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
  r = vfmsq_f32(r, n, vdupq_n_f32(1.428606765330187e-06f));
  float32x4_t p = vdupq_n_f32(1.f / 5040.f);
  p = vfmaq_f32(vdupq_n_f32(1.f / 720.f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.f / 120.f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.f / 24.f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.f / 6.f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.f), p, r);
  const int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(n), 23);  // NaN n converts to 0
  const float32x4_t y = vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
  return vbslq_f32(overflow, vdupq_n_f32(__builtin_inff()), y);
}

// silu(g) * u = g * u / (1 + exp(-g))
inline float32x4_t silu_mul(float32x4_t g, float32x4_t u) {
  const float32x4_t den = vaddq_f32(vdupq_n_f32(1.f), exp_f32(vnegq_f32(g)));
  return vdivq_f32(vmulq_f32(g, u), den);
}

// The stage-1 epilogue of the 4 channels n .. n + 3: silu(g) * u, or as glu says (GluParams).
// FMIN/FMAX return NaN when either operand is, so a NaN g or u stays NaN through the clamps.
inline float32x4_t gated(float32x4_t g, float32x4_t u, const GluParams* glu, int n) {
  if (!glu) return silu_mul(g, u);
  if (glu->gate_bias) g = vaddq_f32(g, vld1q_f32(glu->gate_bias + n));
  if (glu->up_bias) u = vaddq_f32(u, vld1q_f32(glu->up_bias + n));
  const float32x4_t lim = vdupq_n_f32(glu->limit);
  g = vminq_f32(g, lim);
  u = vmaxq_f32(vminq_f32(u, lim), vnegq_f32(lim));
  if (glu->alpha == 0.f) return silu_mul(g, u);
  // g sigmoid(alpha g) (u + 1) = g (u + 1) / (1 + exp(-alpha g))
  const float32x4_t den = vaddq_f32(vdupq_n_f32(1.f), exp_f32(vmulq_n_f32(g, -glu->alpha)));
  return vdivq_f32(vmulq_f32(g, vaddq_f32(u, vdupq_n_f32(1.f))), den);
}

}  // namespace
}  // namespace kt::neon
