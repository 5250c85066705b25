// [NOTE] q8_0 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Decode of a k-block (32 k, the 16 rows' blocks): each row's 32 int8 made unsigned (q + 128, an
// xor after the transpose), the 16 x 8 dword transpose, and the 16 fp16 scales by one gather.
//   block = a.d * d * (sum_k (q + 128) a.q[k] - 128 * a.sum)        (isum exact in int32)
// One k-block is 8 vpdpbusd per row against 34 bytes x 16 rows: at prefill the decode is shared by
// every row of the call; what is left to do: two k-blocks per transpose (64 k) would halve its
// shuffles per byte.
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q8_0 {
  using Block = BlockQ8_0;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockQ8_0* b, Decoded& D) {
    __m256i v[16];
    for (int c = 0; c < 16; ++c) v[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[c].qs));
    gguf_vnni::legacy_transpose(v, D);
    for (int g = 0; g < 8; ++g) D.q[g] = _mm512_xor_si512(D.q[g], _mm512_set1_epi8(char(0x80)));
    D.d = gguf_vnni::half_to_ps(gguf_vnni::gather_word(b, 0), 0);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<128, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q8_0_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q8_0>(a); }
void down_q8_0_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q8_0>(a); }

KT_KERNEL_ROW(q8_0, kAvx512VnniObj, q8_32, q8_0_q8_32_8x16__avx512vnni)

}  // namespace kt
