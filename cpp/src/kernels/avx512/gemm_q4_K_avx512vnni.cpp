// [NOTE] q4_K weights x q8_256 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (256 k, the 16 rows' blocks): per row two 64-byte loads of nibbles, whose
// low and high nibbles are the sub-blocks 0, 2 | 1, 3 (and 4, 6 | 5, 7): a 128-bit shuffle puts
// them in k order; then the 16 x 16 dword transposes, and the 6-bit scales and mins of the 16
// rows from 4 gathered words, one row per lane.
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

  static void decode(const BlockQ4_K* b, Decoded& D) {
    alignas(64) uint8_t stage[16 * kQK];
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int c = 0; c < 16; ++c)
      for (int h = 0; h < 2; ++h) {  // qs[64h ..]: low nibbles k = 128h + 0..31, 64..95; high: 32..63, 96..127
        const __m512i v = _mm512_loadu_si512(b[c].qs + 64 * h);
        const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        _mm512_store_si512(stage + kQK * c + 128 * h, _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm512_store_si512(stage + kQK * c + 128 * h + 64, _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2)));
      }
    gguf_vnni::transpose_stage<kQK>(stage, D.q);
    gguf_vnni::q4K_scales(b, offsetof(BlockQ4_K, scales), D);
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
