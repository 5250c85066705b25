// [NOTE] q8_0 weights x q8_32 activations with AVX2 (driver: gguf_driver_avx2.h). A block is one
// ymm of int8 q; per row, sum_j q[j] a.q[j] = pmaddwd(pmaddubsw(|q|, sign(a.q, q)), 1) (pairs at
// most 2 * 128 * 127 < 2^15), and the block adds d * a.d * sum (formats/q8_0.cpp). The driver's
// 32-weight path (compute32) reduces 8 blocks of a channel per hadd tree and scales each block's
// sum in its fp32 lane.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q8_0Codec {
  using Block = BlockQ8_0;
  using Act = ActQ8x32;
  static constexpr int kChunks = 1;
  static constexpr bool kMins = false;
  static constexpr int kOffset = 0;      // weights d * (q - kOffset)
  static constexpr bool kPlusMin = false;  // weights d * q + m
  struct Aux {
    __m256i q;  // the signed weights, for their signs
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[1], Aux& aux) {
    aux.q = avx2::load256(b.qs);
    w[0] = _mm256_abs_epi8(aux.q);
  }
  static void dot(const __m256i (&w)[1], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = _mm256_madd_epi16(avx2::dot_signed(w[0], &aux.q, a.q), _mm256_set1_epi16(1));
  }
};

}  // namespace

void gateup_q8_0_q8_32_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q8_0Codec>::gateup(a); }
void down_q8_0_q8_32_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q8_0Codec>::down(a); }

KT_KERNEL_ROW(q8_0, kAvx2Obj, q8_32, q8_0_q8_32_16x16__avx2)

}  // namespace kt
