// [NOTE] Reference kernels for int4_g32 weights, q8s activations:
//   y[c] = s_a * sum_g ( d[c,g] * sum_{k in g} q_w[c,k] q_a[k]  +  m[c,g] * gsum_a[g] )
// Layout in formats/int4_g32.cpp.
#include "kernels/kernel_decls.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

struct Int4Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const int8_t* x = reinterpret_cast<const int8_t*>(act.data + act.stride * row);
    const int32_t* gsum = act.gsum + size_t(act.gsum_stride) * row;
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    for (int g = 0; g < Kp / 32; ++g) {
      const uint8_t* blk = panel + size_t(g) * 320;
      const uint16_t* dm = reinterpret_cast<const uint16_t*>(blk + 256);
      for (int c = 0; c < kPanelN; ++c) {
        int32_t acc = 0;
        for (int kk = 0; kk < 32; ++kk) {
          uint8_t byte = blk[(kk / 8) * 64 + c * 4 + (kk & 3)];
          int q = (kk % 8) < 4 ? (byte & 0xf) : (byte >> 4);
          acc += q * x[g * 32 + kk];
        }
        y[c] += f16_to_f32(dm[c]) * float(acc) + f16_to_f32(dm[kPanelN + c]) * float(gsum[g]);
      }
    }
    for (int c = 0; c < kPanelN; ++c) y[c] *= act.scale[row];
  }
};

}  // namespace

void gateup_int4g32_q8s_1x16__ref(const GateUpArgs& a) { ref::gateup<Int4Dot>(a); }
void down_int4g32_q8s_1x16__ref(const DownArgs& a) { ref::down<Int4Dot>(a); }

}  // namespace kt
