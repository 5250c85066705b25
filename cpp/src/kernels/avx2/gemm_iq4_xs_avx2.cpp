// [NOTE] iq4_xs weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). A block decodes
// its nibbles through pshufb into the levels kIq4Values (signed, |v| <= 127): |v| stays in
// registers and v in L1, for vpsignb to move v's sign onto the activation (pmaddubsw pairs at
// most 2 * 127 * 127). Sub-block j (32 weights: the low then the high nibbles of qs[16j ..]) is one
// chunk with the signed scale ls_j - 32. Per row
//   isum = sum_j pmaddwd(pmaddubsw(|v_j|, sign(a_j, v_j)), ls_j - 32)
// and the block adds d * a.d * isum (formats/iq4_xs.cpp).
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Iq4XsCodec {
  using Block = BlockIq4Xs;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = false;
  struct Aux {
    __m256i v[8];  // the signed levels
    __m256i sc[8];
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    const __m256i levels = avx2::iq4_levels();
    for (int j = 0; j < 8; ++j) {
      aux.v[j] = _mm256_shuffle_epi8(levels, avx2::nibbles16(b.qs + 16 * j));
      w[j] = _mm256_abs_epi8(aux.v[j]);
    }
    // ls_j = low nibble j of scales_l (nibble order: byte j / 2, low first) | bits 2j, 2j + 1 of scales_h << 4
    uint32_t l;
    __builtin_memcpy(&l, b.scales_l, 4);
    const __m128i lb = _mm_cvtsi32_si128(int(l)), nib = _mm_set1_epi8(0x0f);
    const __m256i lo = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(_mm_and_si128(lb, nib), _mm_and_si128(_mm_srli_epi16(lb, 4), nib)));
    const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(b.scales_h), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                        _mm256_set1_epi32(3));
    const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
    avx2::scales_per_32(_mm_packs_epi32(_mm256_castsi256_si128(ls), _mm256_extracti128_si256(ls, 1)), aux.sc);
  }
  static void dot(const __m256i (&w)[8], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = avx2::dot_chunks8_signed(w, aux.v, aux.sc, a.q);
  }
  static __m256 accumulate(__m256 acc, __m256i v, __m256i, __m256 D, __m256, const Act& a) {
    return avx2::scaled(acc, v, D, a.d);
  }
};

}  // namespace

void gateup_iq4_xs_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Iq4XsCodec>::gateup(a); }
void down_iq4_xs_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Iq4XsCodec>::down(a); }

KT_KERNEL_ROW(iq4_xs, kAvx2Obj, q8_256, iq4_xs_q8_256_16x16__avx2)

}  // namespace kt
