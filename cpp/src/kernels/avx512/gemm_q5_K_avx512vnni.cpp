// [NOTE] q5_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): q4_K's (the packed nibbles transposed, two
// 16 x 16 dword transposes) plus the fifth bits: qh transposed once (16 x 8 dwords), and bit k / 32
// of qh[k % 32] moved to bit 4 and merged by one vpternlogd. Scales and mins as q4_K's.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

// bit `bit` of each byte of v at bit 4 (other bits: garbage, masked by the caller)
inline __m512i bit_to_4(__m512i v, int bit) {
  return bit <= 4 ? _mm512_slli_epi16(v, 4 - bit) : _mm512_srli_epi16(v, bit - 4);
}

struct Q5_K {
  using Block = BlockQ5_K;
  using Act = ActQ8x256;
  using Decoded = gguf_vnni::KBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockQ5_K* b, Decoded& D) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m10 = _mm512_set1_epi8(0x10);
    __m512i H[8];  // H[g] lane c: qh[4g .. 4g+3] of row c
    gguf_vnni::load_transpose16x8(b, offsetof(BlockQ5_K, qh), H);
    for (int h = 0; h < 2; ++h) {
      __m512i P[16];
      gguf_vnni::load_transpose16(b, offsetof(BlockQ5_K, qs) + 64 * h, P);
      for (int g = 0; g < 16; ++g) {
        const int k = 128 * h + (g < 8 ? 4 * g : 64 + 4 * (g - 8));  // of the low nibbles; high: k + 32
        const __m512i hb = H[g % 8];
        D.q[k / 4] = gguf_vnni::or_and(_mm512_and_si512(P[g], m4), bit_to_4(hb, k / 32), m10);
        D.q[k / 4 + 8] =
            gguf_vnni::or_and(_mm512_and_si512(_mm512_srli_epi16(P[g], 4), m4), bit_to_4(hb, k / 32 + 1), m10);
      }
    }
    gguf_vnni::q4K_scales(b, D);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::kquant_rows<32, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q5_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q5_K>(a); }
void down_q5_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q5_K>(a); }

KT_KERNEL_ROW(q5_K, kAvx512VnniObj, q8_256, q5_K_q8_256_8x16__avx512vnni)

}  // namespace kt
