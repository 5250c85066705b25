// [NOTE] Reference kernels for bf16 weights, fp32 activations: y[c] = sum_k w[c,k] x[k] in fp32,
// k in order. Layout in formats/bf16.cpp.
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

struct Bf16Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const Bf16Block* w = reinterpret_cast<const Bf16Block*>(panel);
    const float* x = reinterpret_cast<const float*>(act.data + act.stride * row);
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    for (int k = 0; k < Kp; ++k)
      for (int c = 0; c < kPanelN; ++c) y[c] += bf16_to_f32(w[k / Bf16Block::kK].w[c][k % Bf16Block::kK]) * x[k];
  }
};

}  // namespace

void gateup_bf16_f32_1x16__ref(const GateUpArgs& a) { ref::gateup<Bf16Dot>(a); }
void down_bf16_f32_1x16__ref(const DownArgs& a) { ref::down<Bf16Dot>(a); }

KT_KERNEL_ROW(bf16, kRef, f32, bf16_f32_1x16__ref)

}  // namespace kt
