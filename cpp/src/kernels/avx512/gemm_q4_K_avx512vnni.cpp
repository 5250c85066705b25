// [NOTE] q4_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): the packed nibbles of the 16 rows transposed
// (two 16 x 16 dword transposes: half the shuffles of transposing the unpacked bytes), then each
// transposed word's low and high nibbles are 4 consecutive k; the 6-bit scales and mins of the 16
// rows from their first 16 bytes transposed (16 x 4 dwords), one row per lane.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
// (nibbles 0..15 are vpdpbusd's unsigned operand; the mins by vpdpwssd on the bsums).
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q4_K {
  using Block = BlockQ4_K;
  using Act = ActQ8x256;
  using Decoded = gguf_vnni::KBlock;
  static constexpr int kMR = 8;

  // qs byte 64h + b (b < 64), h = 0, 1: low nibble k = 128h + b (b < 32) or 128h + 32 + b (b >= 32),
  // high nibble k + 32. The packed bytes are transposed (P[g] lane c: bytes 64h + 4g.. of row c),
  // then the nibbles go to q[k / 4].
  static void decode(const BlockQ4_K* b, Decoded& D) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int h = 0; h < 2; ++h) {
      __m512i P[16];
      gguf_vnni::load_transpose16(b, offsetof(BlockQ4_K, qs) + 64 * h, P);
      for (int g = 0; g < 16; ++g) {
        const int k = 128 * h + (g < 8 ? 4 * g : 64 + 4 * (g - 8));  // of the low nibbles
        D.q[k / 4] = _mm512_and_si512(P[g], m4);
        D.q[k / 4 + 8] = _mm512_and_si512(_mm512_srli_epi16(P[g], 4), m4);
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

void gateup_q4_K_q8_256_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q4_K>(a); }
void down_q4_K_q8_256_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q4_K>(a); }

KT_KERNEL_ROW(q4_K, kAvx512VnniObj, q8_256, q4_K_q8_256_8x16__avx512vnni)

}  // namespace kt
