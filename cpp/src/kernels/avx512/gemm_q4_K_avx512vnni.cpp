// [NOTE] q4_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h). Decode of a k-block (256 k, the 16
// rows' blocks): each word of the packed nibbles of the 16 rows holds 4 consecutive k in its low
// nibbles and 4 in its high ones; the 6-bit scales and mins of the 16 rows from their first 4
// words, one row per lane.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
// (nibbles 0..15 are vpdpbusd's unsigned operand; the mins by vpdpwssd on the bsums).
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q4_K : gguf_vnni::WordKQuant<Q4_K> {
  using Block = BlockQ4_K;
  static constexpr int kSub = 32;
  static constexpr bool kOneScale = false;
  static constexpr bool kL2Prefetch = false;  // see gguf_vnni::prefetch_ahead

  // qs byte 32t + l (t < 4, l < 32): low nibble k = 64t + l, high nibble k + 32. Word i of qs of
  // the 16 rows (lane c: bytes 4i .. 4i+3 of row c) holds 4 consecutive k in its low nibbles and
  // the 4 at k + 32 in its high ones.
  template <class Put>
  static void weights(const BlockQ4_K* b, Put&& put) {
    const gguf_vnni::Words<BlockQ4_K> w(b);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 64
    for (int g = 0; g < 64; ++g) {  // k = 4g = 64t + r: nibbles of qs word 8t + r % 32 / 4, high from r = 32
      const int t = g / 16, r = g % 16;
      const __m512i P = w[offsetof(BlockQ4_K, qs) / 4 + 8 * t + r % 8];
      put(g, r < 8 ? _mm512_and_si512(P, m4) : _mm512_and_si512(_mm512_srli_epi16(P, 4), m4));
    }
  }
  static void scales(const BlockQ4_K* b, gguf_vnni::KBlock& D) {
    gguf_vnni::q4K_scales(gguf_vnni::Words<BlockQ4_K>(b), D);
  }
};

}  // namespace

void gateup_q4_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q4_K>(a); }
void down_q4_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q4_K>(a); }

KT_KERNEL_ROW_IN(q4_K, kAvx512VnniObj, q8_256, q4_K_q8_256_8x16__avx512vnni, q4_K_words)

}  // namespace kt
