// [NOTE] q6_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): the packed bytes of the 16 rows transposed
// (ql: two 16 x 16 dword transposes, qh: one), then each transposed word gives 4 consecutive k:
// a nibble of ql with its 2 high bits from qh (shifted to bits 4..5, merged by one vpternlogd).
// The 16 int8 scales of the 16 rows transposed (16 x 4 dwords), d by one gather, one row per lane.
//   u = q + 32 in 0..63 is vpdpbusd's unsigned operand; the -32 goes to the bsums:
//   block = a.d * d * sum_j sc_j (isum_j - 32 bsums[j])      (sub-blocks of 16; I1 - I2 exact)
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q6_K {
  using Block = BlockQ6_K;
  using Act = ActQ8x256;
  using Decoded = gguf_vnni::KBlock;
  static constexpr int kMR = 8;

  // ql byte 64h + b: low nibble of k = 128h + b (b < 32, s = 0) or 128h + b (b >= 32, s = 1), high
  // nibble k + 64 (s + 2); its high bits are bits 2s, 2s + 1 of qh[32h + b % 32].
  static void decode(const BlockQ6_K* b, Decoded& D) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m512i H[16];
    gguf_vnni::load_transpose16(b, offsetof(BlockQ6_K, qh), H);
    for (int h = 0; h < 2; ++h) {
      __m512i P[16];
      gguf_vnni::load_transpose16(b, offsetof(BlockQ6_K, ql) + 64 * h, P);
      for (int g = 0; g < 16; ++g) {
        const int l = 4 * (g % 8), s = g / 8;
        const __m512i hb = H[8 * h + g % 8];
        // bits 2s, 2s+1 and 2s+4, 2s+5 of each qh byte at bits 4, 5 (16-bit shifts, masked per byte)
        const __m512i hi_lo = s == 0 ? _mm512_slli_epi16(hb, 4) : _mm512_slli_epi16(hb, 2);
        const __m512i hi_hi = s == 0 ? hb : _mm512_srli_epi16(hb, 2);
        const int k = 128 * h + 32 * s + l;
        D.q[k / 4] = gguf_vnni::or_and(_mm512_and_si512(P[g], m4), hi_lo, m30);
        D.q[(k + 64) / 4] = gguf_vnni::or_and(_mm512_and_si512(_mm512_srli_epi16(P[g], 4), m4), hi_hi, m30);
      }
    }
    __m512i S[4];
    gguf_vnni::load_transpose16x4(b, offsetof(BlockQ6_K, scales), S);
    for (int j = 0; j < 16; ++j)
      D.sc[j] = _mm512_srai_epi32(_mm512_slli_epi32(S[j / 4], 24 - 8 * (j % 4)), 24);
    for (int i = 0; i < 8; ++i)  // the -32: coefficients 32 sc_j of bsums[j]
      D.mc[i] = gguf_vnni::int16_pair(_mm512_slli_epi32(D.sc[2 * i], 5), _mm512_slli_epi32(D.sc[2 * i + 1], 5));
    // d is the block's last 2 bytes: the word that ends there
    D.d = gguf_vnni::half_to_ps(gguf_vnni::gather_word(b, offsetof(BlockQ6_K, d) - 2), 16);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::kquant_rows<16, true, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q6_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q6_K>(a); }
void down_q6_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q6_K>(a); }

KT_KERNEL_ROW(q6_K, kAvx512VnniObj, q8_256, q6_K_q8_256_8x16__avx512vnni)

}  // namespace kt
