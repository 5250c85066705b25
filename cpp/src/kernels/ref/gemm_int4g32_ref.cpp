// [NOTE] Reference kernels for int4_g32 weights, q8s activations:
//   y[c] = s_a * sum_g ( d[c,g] * sum_{k in g} q_w[c,k] q_a[k]  +  m[c,g] * gsum_a[g] )
// Layout in formats/int4_g32.cpp. int4_g32_zp (kZeroPoint): the block's m holds -z, and the
// group minimum is d * m in fp32 (exact): w = d q - d z = d (q - z).
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

template <bool kZeroPoint>
struct Int4Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const int8_t* x = reinterpret_cast<const int8_t*>(act.data + act.stride * row);
    const int32_t* gsum = act.gsum + size_t(act.gsum_stride) * row;
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    constexpr int G = Int4G32Block::kK;
    for (int g = 0; g < Kp / G; ++g) {
      const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(panel)[g];
      for (int c = 0; c < kPanelN; ++c) {
        int32_t acc = 0;
        for (int kk = 0; kk < G; ++kk) {
          uint8_t byte = blk.q[kk / 8][c * 4 + (kk & 3)];
          int q = (kk % 8) < 4 ? (byte & 0xf) : (byte >> 4);
          acc += q * x[g * G + kk];
        }
        const float d = f16_to_f32(blk.d[c]), m = kZeroPoint ? d * f16_to_f32(blk.m[c]) : f16_to_f32(blk.m[c]);
        y[c] += d * float(acc) + m * float(gsum[g]);
      }
    }
    for (int c = 0; c < kPanelN; ++c) y[c] *= act.scale[row];
  }
};

}  // namespace

void gateup_int4g32_q8s_1x16__ref(const GateUpArgs& a) { ref::gateup<Int4Dot<false>>(a); }
void down_int4g32_q8s_1x16__ref(const DownArgs& a) { ref::down<Int4Dot<false>>(a); }
void gateup_int4g32zp_q8s_1x16__ref(const GateUpArgs& a) { ref::gateup<Int4Dot<true>>(a); }
void down_int4g32zp_q8s_1x16__ref(const DownArgs& a) { ref::down<Int4Dot<true>>(a); }

KT_KERNEL_ROW(int4_g32, kRef, q8s, int4g32_q8s_1x16__ref)
KT_KERNEL_ROW(int4_g32_zp, kRef, q8s, int4g32zp_q8s_1x16__ref)

}  // namespace kt
