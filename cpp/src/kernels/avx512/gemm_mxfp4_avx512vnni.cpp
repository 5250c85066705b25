// [NOTE] mxfp4 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h), as
// iq4_nl's kernel: the doubled e2m1 levels kMxfp4Values + 128 (116..140, one vpshufb) are the
// unsigned operand; block = a.d * 2^(e-128) * (isum - 128 * a.sum). The 16 rows' 32 values of a
// block go through one 16 x 8 dword transpose; the exponents come by one gather.
// Reference: formats/mxfp4.cpp.
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Mxfp4Levels {
  uint8_t v[16];
};
constexpr Mxfp4Levels kMxfp4Levels = [] {
  Mxfp4Levels l{};
  for (int i = 0; i < 16; ++i) l.v[i] = uint8_t(kMxfp4Values[i] + 128);
  return l;
}();

struct Mxfp4 {
  using Block = BlockMxfp4;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockMxfp4* b, Decoded& D) {
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Levels.v)));
    __m256i v[16];
    for (int c = 0; c < 16; ++c) v[c] = _mm256_shuffle_epi8(tab, gguf_vnni::nibbles32(b[c].qs));
    gguf_vnni::legacy_transpose(v, D);
    // 2^(e - 128): the fp32 bits e << 23 are 2^(e - 127) for e >= 1 (2^-127 for e = 0), halved exactly
    const __m512i e = _mm512_and_si512(gguf_vnni::gather_word(b, 0), _mm512_set1_epi32(0xff));
    const __m512i bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), _mm512_testn_epi32_mask(e, e),
                                               _mm512_set1_epi32(0x00400000));
    D.d = _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(0.5f));
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<128, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_mxfp4_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Mxfp4>(a); }
void down_mxfp4_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Mxfp4>(a); }

KT_KERNEL_ROW(mxfp4, kAvx512VnniObj, q8_32, mxfp4_q8_32_8x16__avx512vnni)

}  // namespace kt
