// [NOTE] Reference kernels for int8_pc weights, q8s activations:
//   y[c] = s_a * s_w[c] * sum_k q_w[c,k] q_a[k]   (int32 sum, exact)
// Layout in formats/int8_pc.cpp.
#include "kernels/kernel_registry.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

struct Int8Dot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const Int8PcBlock* w = reinterpret_cast<const Int8PcBlock*>(panel);
    const float* scale = int8pc_tail(panel, Kp)->scale;
    const int8_t* x = reinterpret_cast<const int8_t*>(act.data + act.stride * row);
    for (int c = 0; c < kPanelN; ++c) {
      int32_t acc = 0;
      for (int k = 0; k < Kp; ++k) acc += int32_t(w[k / Int8PcBlock::kK].q[c][k % Int8PcBlock::kK]) * x[k];
      y[c] = act.scale[row] * (scale[c] * float(acc));
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_1x16__ref(const GateUpArgs& a) { ref::gateup<Int8Dot>(a); }
void down_int8pc_q8s_1x16__ref(const DownArgs& a) { ref::down<Int8Dot>(a); }

KT_KERNEL_ROW(int8_pc, kRef, q8s, int8pc_q8s_1x16__ref)

}  // namespace kt
