// [NOTE] Reference kernels for f32 weights, fp32 activations: y[c] = sum_k w[c,k] x[k] in fp32,
// k in order. Layout in formats/f32.cpp.
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

struct F32Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const F32Block* w = reinterpret_cast<const F32Block*>(panel);
    const float* x = reinterpret_cast<const float*>(act.data + act.stride * row);
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    for (int k = 0; k < Kp; ++k)
      for (int c = 0; c < kPanelN; ++c) y[c] += w[k].w[c] * x[k];
  }
};

}  // namespace

void gateup_f32_f32_1x16__ref(const GateUpArgs& a) { ref::gateup<F32Dot>(a); }
void down_f32_f32_1x16__ref(const DownArgs& a) { ref::down<F32Dot>(a); }

KT_KERNEL_ROW(f32, kRef, f32, f32_f32_1x16__ref)

}  // namespace kt
