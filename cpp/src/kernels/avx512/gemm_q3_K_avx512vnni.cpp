// [NOTE] q3_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): the 2-bit planes (qs, one 16 x 16 dword
// transpose) and the third bits (hmask, one 16 x 8 transpose) of the 16 rows; each transposed
// word gives 4 consecutive k, u = low2 + 4 hbit in 0..7 (one vpternlogd). The 6-bit scales and
// d from the blocks' last 16 bytes transposed (16 x 4 dwords), one row per lane.
//   q = u - 4:  block = a.d * d * sum_j sc_j (isum_j - 4 bsums[j])      (sub-blocks of 16)
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

// bit `bit` of each byte of v at bit 2 (other bits: garbage, masked by the caller)
inline __m512i bit_to_2(__m512i v, int bit) {
  return bit <= 2 ? _mm512_slli_epi16(v, 2 - bit) : _mm512_srli_epi16(v, bit - 2);
}

struct Q3_K {
  using Block = BlockQ3_K;
  using Act = ActQ8x256;
  using Decoded = gguf_vnni::KBlock;
  static constexpr int kMR = 8;

  // weight 128n + 32s + l: bits 2s, 2s + 1 of qs[32n + l], third bit: bit 4n + s of hmask[l].
  static void decode(const BlockQ3_K* b, Decoded& D) {
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
    __m512i H[8], P[16];
    gguf_vnni::load_transpose16x8(b, offsetof(BlockQ3_K, hmask), H);
    gguf_vnni::load_transpose16(b, offsetof(BlockQ3_K, qs), P);
    for (int g = 0; g < 16; ++g)
      for (int s = 0; s < 4; ++s) {
        const int n = g / 8;
        D.q[(128 * n + 32 * s + 4 * (g % 8)) / 4] =
            gguf_vnni::or_and(_mm512_and_si512(_mm512_srli_epi16(P[g], 2 * s), m3), bit_to_2(H[g % 8], 4 * n + s), m4);
      }
    // scales[12]: low 4 bits of u_j in byte j % 8 (j < 8: low nibble, else high), high 2 bits at
    // 2 (j / 4) of byte 8 + j % 4;  sc_j = u_j - 32
    // the blocks' last 16 bytes: qs[62..63], scales[12], d; the scale words straddle two of them
    __m512i T[4];
    gguf_vnni::load_transpose16x4(b, sizeof(BlockQ3_K) - 16, T);
    auto word = [&](int i) { return _mm512_or_si512(_mm512_srli_epi32(T[i], 16), _mm512_slli_epi32(T[i + 1], 16)); };
    const __m512i a0 = word(0), a1 = word(1), a2 = word(2);
    const __m512i m15 = _mm512_set1_epi32(15), m3d = _mm512_set1_epi32(3), m32 = _mm512_set1_epi32(32);
    for (int j = 0; j < 16; ++j) {
      const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(j % 8 < 4 ? a0 : a1, 8 * (j % 4) + 4 * (j / 8)), m15);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(a2, 8 * (j % 4) + 2 * (j / 4)), m3d);
      D.sc[j] = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), m32);
    }
    for (int i = 0; i < 8; ++i)  // the -4: coefficients 4 sc_j of bsums[j]
      D.mc[i] = gguf_vnni::int16_pair(_mm512_slli_epi32(D.sc[2 * i], 2), _mm512_slli_epi32(D.sc[2 * i + 1], 2));
    D.d = gguf_vnni::half_to_ps(T[3], 16);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::kquant_rows<16, true, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q3_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q3_K>(a); }
void down_q3_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q3_K>(a); }

KT_KERNEL_ROW(q3_K, kAvx512VnniObj, q8_256, q3_K_q8_256_8x16__avx512vnni)

}  // namespace kt
