// [NOTE] iq4_xs weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h). Decode of a k-block (256 k, the 16
// rows' blocks): each nibble of the words of packed indexes looked up (vpshufb) in kIq4Values + 128,
// which makes the levels unsigned (1..241) for vpdpbusd; the 6-bit scales and d from the first 2
// words, one row per lane.
//   block = a.d * d * sum_j ls_j (isum_j - 128 (bsums[2j] + bsums[2j+1]))      (ls = u - 32)
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Iq4Xs : gguf_vnni::WordKQuant<Iq4Xs> {
  using Block = BlockIq4Xs;
  static constexpr int kSub = 32;
  static constexpr bool kOneScale = true;
  static constexpr bool kL2Prefetch = true;  // see gguf_vnni::prefetch_ahead

  // qs byte 16j + l (sub-block j): index of k = 32j + l (low nibble) and 32j + 16 + l (high).
  template <class Put>
  static void weights(const BlockIq4Xs* b, Put&& put) {
    const gguf_vnni::Words<BlockIq4Xs> w(b);
    const __m512i tab = _mm512_broadcast_i32x4(gguf_vnni::iq4_levels());
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 64
    for (int g = 0; g < 64; ++g) {  // k = 4g = 32j + r: nibbles of qs word 4j + r % 16 / 4, high from r = 16
      const int j = g / 8, r = 4 * (g % 8);
      const __m512i P = w[offsetof(BlockIq4Xs, qs) / 4 + 4 * j + r % 16 / 4];
      put(g, _mm512_shuffle_epi8(tab, r < 16 ? _mm512_and_si512(P, m4) : _mm512_and_si512(_mm512_srli_epi16(P, 4), m4)));
    }
  }
  static void scales(const BlockIq4Xs* b, gguf_vnni::KBlock& D) {
    const gguf_vnni::Words<BlockIq4Xs> w(b);
    const __m512i w0 = w[0], w1 = w[1];  // d | scales_h << 16, scales_l[0..3]
    const __m512i m15 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3), m32 = _mm512_set1_epi32(32);
    for (int j = 0; j < 8; ++j) {
      const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(w1, 8 * (j / 2) + 4 * (j % 2)), m15);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(w0, 16 + 2 * j), m3);
      const __m512i ls = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), m32);
      D.sc[j] = ls;
      const __m512i c = _mm512_slli_epi32(ls, 7);  // the -128 of the levels: 128 ls_j on both bsums
      D.mc[j] = gguf_vnni::int16_pair(c, c);
    }
    D.d = gguf_vnni::half_to_ps(w0, 0);
  }
};

}  // namespace

void gateup_iq4_xs_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Iq4Xs>(a); }
void down_iq4_xs_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Iq4Xs>(a); }

KT_KERNEL_ROW_IN(iq4_xs, kAvx512VnniObj, q8_256, iq4_xs_q8_256_8x16__avx512vnni, iq4_xs_words)

}  // namespace kt
