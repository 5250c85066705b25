// [NOTE] Reference kernels of the GGUF block types: for each of the panel's rows, the sum over its
// k-blocks of the block type's dot_block (formats/<type>.cpp: integer sums per sub-block, then the
// scales) with the row's activation blocks (q8_32 or q8_256). Layout in formats/gguf_format.h.
#include "formats/gguf_format.h"
#include "kernels/ref/ref_driver.h"

namespace kt {
namespace {

template <class Block, class Act>
struct GgufDot {
  static void dot(const uint8_t* panel, int Kp, const ActView& act, int row, float* y) {
    const GgufPanelBlock<Block>* w = reinterpret_cast<const GgufPanelBlock<Block>*>(panel);
    const Act* a = reinterpret_cast<const Act*>(act.data + act.stride * row);
    for (int c = 0; c < kPanelN; ++c) y[c] = 0.f;
    for (int s = 0; s < Kp / Block::kK; ++s)
      for (int c = 0; c < kPanelN; ++c) y[c] += dot_block(w[s].b[c], a[s]);
  }
};

}  // namespace

// The gate/up and down entry points of format `fmt` and their kernel-table row.
#define KT_GGUF_REF_ROW(fmt, Block, act, Act)                                                           \
  void gateup_##fmt##_##act##_1x16__ref(const GateUpArgs& a) { ref::gateup<GgufDot<Block, Act>>(a); } \
  void down_##fmt##_##act##_1x16__ref(const DownArgs& a) { ref::down<GgufDot<Block, Act>>(a); }       \
  KT_KERNEL_ROW(fmt, kRef, act, fmt##_##act##_1x16__ref)

KT_GGUF_REF_ROW(q8_0, BlockQ8_0, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(q4_0, BlockQ4_0, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(q4_1, BlockQ4_1, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(q5_0, BlockQ5_0, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(q5_1, BlockQ5_1, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(iq4_nl, BlockIq4Nl, q8_32, ActQ8x32)
KT_GGUF_REF_ROW(q2_K, BlockQ2_K, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(q3_K, BlockQ3_K, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(q4_K, BlockQ4_K, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(q5_K, BlockQ5_K, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(q6_K, BlockQ6_K, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(iq4_xs, BlockIq4Xs, q8_256, ActQ8x256)
KT_GGUF_REF_ROW(mxfp4, BlockMxfp4, q8_32, ActQ8x32)

}  // namespace kt
