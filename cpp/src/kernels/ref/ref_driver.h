// Scalar drivers shared by the reference kernels: loop over panels and rows, call the format's
// panel dot product, apply the epilogue. The reference twins of every SIMD kernel.
#pragma once
#include <cmath>

#include "kt/kernels.h"

namespace kt::ref {
namespace {

inline float silu(float g) { return g / (1.f + std::exp(-g)); }

// The stage-1 epilogue of channel n: silu(g) * u, or as glu says (GluParams); NaN stays NaN.
inline float gated(float g, float u, const GluParams* glu, int n) {
  if (!glu) return silu(g) * u;
  if (glu->gate_bias) g += glu->gate_bias[n];
  if (glu->up_bias) u += glu->up_bias[n];
  const float lim = glu->limit;
  g = g > lim ? lim : g;
  u = u > lim ? lim : u < -lim ? -lim : u;
  if (glu->alpha == 0.f) return silu(g) * u;
  return g * (u + 1.f) / (1.f + std::exp(-glu->alpha * g));
}

// PanelDot::dot(panel, Kp, act, row, y[16]) computes the 16 channel dot products of one row.
template <class PanelDot>
void gateup(const GateUpArgs& a) {
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* gp = a.gate->data + a.gate->panel_bytes * p;
    const uint8_t* up = a.up->data + a.up->panel_bytes * p;
    for (int i = 0; i < a.m; ++i) {
      int row = a.rows ? a.rows[i] : i;
      float g[kPanelN], u[kPanelN];
      PanelDot::dot(gp, a.act.Kp, a.act, row, g);
      PanelDot::dot(up, a.act.Kp, a.act, row, u);
      float* h = a.h + a.ldh * i + p * kPanelN;
      for (int c = 0; c < kPanelN; ++c) h[c] = gated(g[c], u[c], a.glu, p * kPanelN + c);
    }
  }
}

template <class PanelDot>
void down(const DownArgs& a) {
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* wp = a.down->data + a.down->panel_bytes * p;
    for (int i = 0; i < a.m; ++i) {
      float y[kPanelN];
      PanelDot::dot(wp, a.act.Kp, a.act, i, y);
      float* o = a.out + a.ldo * a.tok[i] + p * kPanelN;
      for (int c = 0; c < kPanelN; ++c) o[c] += a.weight[i] * y[c];
    }
  }
}

}  // namespace
}  // namespace kt::ref
