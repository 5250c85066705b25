// [NOTE] q4_0 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Nibbles 0..15 are the unsigned operand; block = a.d * d * (isum - 8 * a.sum).
// The 16 rows' 32 values of a block go through one 16 x 8 dword transpose; scales by one gather.
// One k-block is 8 vpdpbusd per row: the decode is shared by every row of the call. Left to do:
// transposing the packed bytes (16 x 4 dwords) before unpacking would halve the shuffles.
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q4_0 {
  using Block = BlockQ4_0;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockQ4_0* b, Decoded& D) {
    __m256i v[16];
    for (int c = 0; c < 16; ++c) v[c] = gguf_vnni::nibbles32(b[c].qs);
    gguf_vnni::legacy_transpose(v, D);
    D.d = gguf_vnni::half_to_ps(gguf_vnni::gather_word(b, 0), 0);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<8, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q4_0_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q4_0>(a); }
void down_q4_0_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q4_0>(a); }

KT_KERNEL_ROW(q4_0, kAvx512VnniObj, q8_32, q4_0_q8_32_8x16__avx512vnni)

}  // namespace kt
