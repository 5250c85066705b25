// [NOTE] Reference kernels for int4_g32 weights, q8s activations:
//   y[c] = s_a * sum_g ( d[c,g] * sum_{k in g} q_w[c,k] q_a[k]  +  m[c,g] * gsum_a[g] )
// Layout in formats/int4_g32.cpp. int4_g32_zp (kZeroPoint): the block's m holds -z, and the
// group minimum is d * m in fp32 (exact): w = d q - d z = d (q - z); its activations are q8_32
// (kernels/int4_act.h), whose scale s_a[g] applies per group:
//   y[c] = sum_g s_a[g] ( d[c,g] * sum_{k in g} q_w[c,k] q_a[k]  +  m[c,g] * gsum_a[g] )
#include "kernels/int4_act.h"
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

template <bool kZeroPoint, ActFormat kAct>
struct Int4Dot {
  using Act = Int4Act<kAct>;
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    constexpr int G = Int4G32Block::kK;
    for (int g = 0; g < Kp / G; ++g) {
      const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(panel)[g];
      const int8_t* x = Act::q(act, row, g);
      const float gsum = float(Act::sum(act, row, g)), s = Act::group_scale(act, row, g);
      for (int c = 0; c < kPanelN; ++c) {
        int32_t acc = 0;
        for (int kk = 0; kk < G; ++kk) {
          uint8_t byte = blk.q[kk / 8][c * 4 + (kk & 3)];
          int q = (kk % 8) < 4 ? (byte & 0xf) : (byte >> 4);
          acc += q * x[kk];
        }
        const float d = f16_to_f32(blk.d[c]), m = kZeroPoint ? d * f16_to_f32(blk.m[c]) : f16_to_f32(blk.m[c]);
        if constexpr (Act::kGroupScale)
          y[c] += s * (d * float(acc) + m * gsum);
        else
          y[c] += d * float(acc) + m * gsum;
      }
    }
    for (int c = 0; c < kPanelN; ++c) y[c] *= Act::row_scale(act, row);
  }
};

}  // namespace

void gateup_int4g32_q8s_1x16__ref(const GateUpArgs& a) { ref::gateup<Int4Dot<false, ActFormat::q8s>>(a); }
void down_int4g32_q8s_1x16__ref(const DownArgs& a) { ref::down<Int4Dot<false, ActFormat::q8s>>(a); }
void gateup_int4g32zp_q8_32_1x16__ref(const GateUpArgs& a) { ref::gateup<Int4Dot<true, ActFormat::q8_32>>(a); }
void down_int4g32zp_q8_32_1x16__ref(const DownArgs& a) { ref::down<Int4Dot<true, ActFormat::q8_32>>(a); }

KT_KERNEL_ROW(int4_g32, kRef, q8s, int4g32_q8s_1x16__ref)
KT_KERNEL_ROW(int4_g32_zp, kRef, q8_32, int4g32zp_q8_32_1x16__ref)

}  // namespace kt
