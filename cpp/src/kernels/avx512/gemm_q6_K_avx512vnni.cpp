// [NOTE] q6_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h). Decode of a k-block (256 k, the 16
// rows' blocks): each word of ql gives 4 consecutive k: a nibble of ql with its 2 high bits from a
// word of qh (shifted to bits 4..5, merged by one vpternlogd). The 16 int8 scales of the 16 rows
// from 4 words, d from the layout's tail, one row per lane.
//   u = q + 32 in 0..63 is vpdpbusd's unsigned operand; the -32 goes to the bsums:
//   block = a.d * d * sum_j sc_j (isum_j - 32 bsums[j])      (sub-blocks of 16; I1 - I2 exact)
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q6_K : gguf_vnni::WordKQuant<Q6_K> {
  using Block = BlockQ6_K;
  static constexpr int kSub = 16;
  static constexpr bool kOneScale = true;
  static constexpr bool kL2Prefetch = true;  // see gguf_vnni::prefetch_ahead

  // ql byte 64h + b: low nibble of k = 128h + b (b < 32, s = 0) or 128h + b (b >= 32, s = 1), high
  // nibble k + 64 (s + 2); its high bits are bits 2s, 2s + 1 of qh[32h + b % 32].
  template <class Put>
  static void weights(const BlockQ6_K* b, Put&& put) {
    const gguf_vnni::Words<BlockQ6_K> w(b);
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
#pragma GCC unroll 64
    for (int g = 0; g < 64; ++g) {  // k = 4g = 128h + 64 hi + l: ql byte 64h + l, its high nibble if hi
      const int h = g / 32, hi = g % 32 / 16, l = 4 * (g % 16), s = l / 32;
      const __m512i P = w[offsetof(BlockQ6_K, ql) / 4 + 16 * h + l / 4];
      const __m512i hb = w[offsetof(BlockQ6_K, qh) / 4 + 8 * h + l % 32 / 4];
      // bits 2s, 2s+1 (low nibble) or 2s+4, 2s+5 (high) of each qh byte at bits 4, 5 (16-bit
      // shifts, masked per byte)
      if (!hi) put(g, gguf_vnni::or_and(_mm512_and_si512(P, m4), _mm512_slli_epi16(hb, 4 - 2 * s), m30));
      else put(g, gguf_vnni::or_and(_mm512_and_si512(_mm512_srli_epi16(P, 4), m4), s ? _mm512_srli_epi16(hb, 2) : hb, m30));
    }
  }
  static void scales(const BlockQ6_K* b, gguf_vnni::KBlock& D) {
    const gguf_vnni::Words<BlockQ6_K> w(b);
    __m512i S[4];
    w.load(offsetof(BlockQ6_K, scales) / 4, S);
    for (int j = 0; j < 16; ++j)
      D.sc[j] = _mm512_srai_epi32(_mm512_slli_epi32(S[j / 4], 24 - 8 * (j % 4)), 24);
    for (int i = 0; i < 8; ++i)  // the -32: coefficients 32 sc_j of bsums[j]
      D.mc[i] = gguf_vnni::int16_pair(_mm512_slli_epi32(D.sc[2 * i], 5), _mm512_slli_epi32(D.sc[2 * i + 1], 5));
    D.d = w.tail_half();  // d: the block's last 2 bytes, the layout's tail
  }
};

}  // namespace

void gateup_q6_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q6_K>(a); }
void down_q6_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q6_K>(a); }

KT_KERNEL_ROW_IN(q6_K, kAvx512VnniObj, q8_256, q6_K_q8_256_8x16__avx512vnni, q6_K_words)

}  // namespace kt
