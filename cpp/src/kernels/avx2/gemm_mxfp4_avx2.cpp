// [NOTE] mxfp4 weights x q8_32 activations with AVX2 (driver: gguf_driver_avx2.h), as iq4_nl's
// kernel: a block's nibbles go through pshufb into the doubled e2m1 levels kMxfp4Values (|v| <= 12),
// |v| in a register, v in L1, per row isum = pmaddwd(pmaddubsw(|v|, sign(a.q, v)), 1); the block
// adds 2^(e-128) * a.d * isum, the scale built from the exponent byte in integer lanes.
// Reference: formats/mxfp4.cpp.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Mxfp4Codec {
  using Block = BlockMxfp4;
  using Act = ActQ8x32;
  static constexpr int kChunks = 1;
  static constexpr bool kMins = false;
  static constexpr int kOffset = 0;
  static constexpr bool kPlusMin = false;
  struct Aux {
    __m256i v;  // the signed levels
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.e, m = 0; }
  // 2^(e - 128): the fp32 bits e << 23 are 2^(e - 127) for e >= 1 (2^-127, a subnormal, for e = 0),
  // halved exactly.
  static __m256 scales_ps(const uint16_t* e) {
    const __m256i e32 = _mm256_cvtepu16_epi32(_mm_setr_epi16(short(e[0]), short(e[1]), short(e[2]), short(e[3]),
                                                              short(e[4]), short(e[5]), short(e[6]), short(e[7])));
    const __m256i bits = _mm256_blendv_epi8(_mm256_slli_epi32(e32, 23), _mm256_set1_epi32(0x00400000),
                                            _mm256_cmpeq_epi32(e32, _mm256_setzero_si256()));
    return _mm256_mul_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(0.5f));
  }
  static void decode(const Block& b, __m256i (&w)[1], Aux& aux) {
    const __m256i levels = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)));
    aux.v = _mm256_shuffle_epi8(levels, avx2::nibbles16(b.qs));
    w[0] = _mm256_abs_epi8(aux.v);
  }
  static void dot(const __m256i (&w)[1], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = _mm256_madd_epi16(avx2::dot_signed(w[0], &aux.v, a.q), _mm256_set1_epi16(1));
  }
};

}  // namespace

void gateup_mxfp4_q8_32_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Mxfp4Codec>::gateup(a); }
void down_mxfp4_q8_32_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Mxfp4Codec>::down(a); }

KT_KERNEL_ROW(mxfp4, kAvx2Obj, q8_32, mxfp4_q8_32_16x16__avx2)

}  // namespace kt
