// [NOTE] q4_1 weights x q8_32 activations with AVX2 (driver: gguf_driver_avx2.h). A block is one ymm of
// nibbles q in 0..15 (avx2::nibbles16); per row isum = pmaddwd(pmaddubsw(q, a.q), 1) (pairs at most
// 2 * 15 * 127), and the block adds d * a.d * isum + m * a.d * a.sum.
// The driver's 32-weight path (compute32) reduces 8 blocks of a channel per hadd tree and scales
// each block's sum in its fp32 lane. Reference: formats/q4_1.cpp.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q4_1Codec {
  using Block = BlockQ4_1;
  using Act = ActQ8x32;
  static constexpr int kChunks = 1;
  static constexpr bool kMins = false;
  static constexpr int kOffset = 0;      // weights d * (q - kOffset)
  static constexpr bool kPlusMin = true;  // weights d * q + m
  struct Aux {};

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = b.m; }
  static void decode(const Block& b, __m256i (&w)[1], Aux&) { w[0] = avx2::nibbles16(b.qs); }
  static void dot(const __m256i (&w)[1], const Aux&, const Act& a, __m256i& isum, __m256i&) {
    isum = avx2::dot_chunk(w[0], a.q);
  }
};

}  // namespace

void gateup_q4_1_q8_32_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q4_1Codec>::gateup(a); }
void down_q4_1_q8_32_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q4_1Codec>::down(a); }

KT_KERNEL_ROW(q4_1, kAvx2Obj, q8_32, q4_1_q8_32_16x16__avx2)

}  // namespace kt
