// [NOTE] iq4_nl weights x q8_32 activations with AVX2 (driver: gguf_driver_avx2.h). A block's nibbles go
// through pshufb into the levels kIq4Values (signed, |v| <= 127): |v| in a register, v in L1, and
// per row isum = pmaddwd(pmaddubsw(|v|, sign(a.q, v)), 1) (pairs at most 2 * 127 * 127); the block
// adds d * a.d * isum.
// The driver's 32-weight path (compute32) reduces 8 blocks of a channel per hadd tree and scales
// each block's sum in its fp32 lane. Reference: formats/iq4_nl.cpp.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Iq4NlCodec {
  using Block = BlockIq4Nl;
  using Act = ActQ8x32;
  static constexpr int kChunks = 1;
  static constexpr bool kMins = false;
  static constexpr int kOffset = 0;      // weights d * (q - kOffset)
  static constexpr bool kPlusMin = false;  // weights d * q + m
  struct Aux {
    __m256i v;  // the signed levels
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[1], Aux& aux) {
    aux.v = _mm256_shuffle_epi8(avx2::iq4_levels(), avx2::nibbles16(b.qs));
    w[0] = _mm256_abs_epi8(aux.v);
  }
  static void dot(const __m256i (&w)[1], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = _mm256_madd_epi16(avx2::dot_signed(w[0], &aux.v, a.q), _mm256_set1_epi16(1));
  }
};

}  // namespace

void gateup_iq4_nl_q8_32_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Iq4NlCodec>::gateup(a); }
void down_iq4_nl_q8_32_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Iq4NlCodec>::down(a); }

KT_KERNEL_ROW(iq4_nl, kAvx2Obj, q8_32, iq4_nl_q8_32_16x16__avx2)

}  // namespace kt
