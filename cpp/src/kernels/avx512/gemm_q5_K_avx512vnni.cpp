// [NOTE] q5_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h). Decode of a k-block (256 k, the 16
// rows' blocks): q4_K's plus the fifth bits: qh's 8 words, and bit k / 32 of qh[k % 32] moved to
// bit 4 and merged by one vpternlogd. Scales and mins as q4_K's.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

// bit `bit` of each byte of v at bit 4 (other bits: garbage, masked by the caller)
inline __m512i bit_to_4(__m512i v, int bit) {
  return bit <= 4 ? _mm512_slli_epi16(v, 4 - bit) : _mm512_srli_epi16(v, bit - 4);
}

struct Q5_K : gguf_vnni::WordKQuant<Q5_K> {
  using Block = BlockQ5_K;
  static constexpr int kSub = 32;
  static constexpr bool kOneScale = false;
  static constexpr bool kL2Prefetch = true;  // see gguf_vnni::prefetch_ahead

  // qs as q4_K's (word i: low nibbles k = 64 (i / 8) + 4 (i % 8), high ones k + 32); the fifth bit
  // of k is bit k / 32 of qh[k % 32], in qh's word i % 8.
  template <class Put>
  static void weights(const BlockQ5_K* b, Put&& put) {
    const gguf_vnni::Words<BlockQ5_K> w(b);
    const __m512i m4 = _mm512_set1_epi8(0x0f), m10 = _mm512_set1_epi8(0x10);
#pragma GCC unroll 64
    for (int g = 0; g < 64; ++g) {  // k = 4g = 64t + r: as q4_K's, fifth bit k / 32 of qh word r % 32 / 4
      const int t = g / 16, r = g % 16;
      const __m512i P = w[offsetof(BlockQ5_K, qs) / 4 + 8 * t + r % 8];
      const __m512i hb = w[offsetof(BlockQ5_K, qh) / 4 + r % 8];
      const __m512i nib = r < 8 ? _mm512_and_si512(P, m4) : _mm512_and_si512(_mm512_srli_epi16(P, 4), m4);
      put(g, gguf_vnni::or_and(nib, bit_to_4(hb, g / 8), m10));
    }
  }
  static void scales(const BlockQ5_K* b, gguf_vnni::KBlock& D) {
    gguf_vnni::q4K_scales(gguf_vnni::Words<BlockQ5_K>(b), D);
  }
};

}  // namespace

void gateup_q5_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q5_K>(a); }
void down_q5_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q5_K>(a); }

KT_KERNEL_ROW_IN(q5_K, kAvx512VnniObj, q8_256, q5_K_q8_256_8x16__avx512vnni, q5_K_words)

}  // namespace kt
