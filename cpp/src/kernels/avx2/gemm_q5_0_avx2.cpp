// [NOTE] q5_0 weights x q8_32 activations with AVX2 (driver: gguf_driver_avx2.h). A block is one ymm of
// q in 0..31 (the nibbles, and bit k of qh as 0x10 in byte k); per row isum = pmaddwd(pmaddubsw(q,
// a.q), 1) (pairs at most 2 * 31 * 127), and the block adds d * a.d * (isum - 16 a.sum).
// The driver's 32-weight path (compute32) reduces 8 blocks of a channel per hadd tree and scales
// each block's sum in its fp32 lane. Reference: formats/q5_0.cpp.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q5_0Codec {
  using Block = BlockQ5_0;
  using Act = ActQ8x32;
  static constexpr int kChunks = 1;
  static constexpr bool kMins = false;
  static constexpr int kOffset = 16;      // weights d * (q - kOffset)
  static constexpr bool kPlusMin = false;  // weights d * q + m
  struct Aux {};

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[1], Aux&) {
    w[0] = _mm256_or_si256(avx2::nibbles16(b.qs), avx2::q5_high_bits(b.qh));
  }
  static void dot(const __m256i (&w)[1], const Aux&, const Act& a, __m256i& isum, __m256i&) {
    isum = avx2::dot_chunk(w[0], a.q);
  }
};

}  // namespace

void gateup_q5_0_q8_32_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q5_0Codec>::gateup(a); }
void down_q5_0_q8_32_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q5_0Codec>::down(a); }

KT_KERNEL_ROW(q5_0, kAvx2Obj, q8_32, q5_0_q8_32_16x16__avx2)

}  // namespace kt
