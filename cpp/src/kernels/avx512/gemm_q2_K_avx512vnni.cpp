// [NOTE] q2_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): the 64 bytes of 2-bit planes of the 16 rows
// transposed once (16 x 16 dwords); each transposed word gives 4 planes of 4 consecutive k. The
// 4-bit scales and mins, d and dmin from the blocks' first and last 16 bytes transposed (16 x 4
// dwords), one row per lane.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j bsums[j])      (sub-blocks of 16)
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q2_K {
  using Block = BlockQ2_K;
  using Act = ActQ8x256;
  using Decoded = gguf_vnni::KBlock;
  static constexpr int kMR = 8;

  // qs byte 32n + l: bits 2s, 2s + 1 are weight 128n + 32s + l.
  static void decode(const BlockQ2_K* b, Decoded& D) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i P[16];
    gguf_vnni::load_transpose16(b, offsetof(BlockQ2_K, qs), P);
    for (int g = 0; g < 16; ++g)
      for (int s = 0; s < 4; ++s)
        D.q[(128 * (g / 8) + 32 * s + 4 * (g % 8)) / 4] = _mm512_and_si512(_mm512_srli_epi16(P[g], 2 * s), m3);
    const __m512i m15 = _mm512_set1_epi32(15);
    __m512i mn[16], S[4];
    gguf_vnni::load_transpose16x4(b, offsetof(BlockQ2_K, scales), S);
    for (int i = 0; i < 4; ++i) {
      const __m512i w = S[i];
      for (int t = 0; t < 4; ++t) {
        D.sc[4 * i + t] = _mm512_and_si512(_mm512_srli_epi32(w, 8 * t), m15);
        mn[4 * i + t] = _mm512_and_si512(_mm512_srli_epi32(w, 8 * t + 4), m15);
      }
    }
    for (int i = 0; i < 8; ++i) D.mc[i] = gguf_vnni::int16_pair(mn[2 * i], mn[2 * i + 1]);
    __m512i T[4];  // the blocks' last 16 bytes: qs[52..63], d | dmin << 16
    gguf_vnni::load_transpose16x4(b, sizeof(BlockQ2_K) - 16, T);
    const __m512i h = T[3];
    D.d = gguf_vnni::half_to_ps(h, 0);
    D.dmin = gguf_vnni::half_to_ps(h, 16);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::kquant_rows<16, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q2_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q2_K>(a); }
void down_q2_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q2_K>(a); }

KT_KERNEL_ROW(q2_K, kAvx512VnniObj, q8_256, q2_K_q8_256_8x16__avx512vnni)

}  // namespace kt
