// [NOTE] Reference kernels for fp8_g128 weights, fp32 activations: y[c] = sum_k w[c,k] x[k] in
// fp32, k in order, w = e4m3(q) * scale as the dequantizer computes it. Layout in
// formats/fp8_g128.cpp.
#include "formats/format_impl.h"
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

struct Fp8G128Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const Fp8G128Block* b = reinterpret_cast<const Fp8G128Block*>(panel);
    const float* x = reinterpret_cast<const float*>(act.data + act.stride * row);
    const float* e4m3 = e4m3_values();
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    for (int k = 0; k < Kp; ++k) {
      const Fp8G128Block& g = b[k / Fp8G128Block::kK];
      const int kk = k % Fp8G128Block::kK;
      for (int c = 0; c < kPanelN; ++c) y[c] += e4m3[g.q[kk / 4][Fp8G128Block::q_byte(c, kk % 4)]] * g.scale[c] * x[k];
    }
  }
};

}  // namespace

void gateup_fp8g128_f32_1x16__ref(const GateUpArgs& a) { ref::gateup<Fp8G128Dot>(a); }
void down_fp8g128_f32_1x16__ref(const DownArgs& a) { ref::down<Fp8G128Dot>(a); }

KT_KERNEL_ROW(fp8_g128, kRef, f32, fp8g128_f32_1x16__ref)

}  // namespace kt
