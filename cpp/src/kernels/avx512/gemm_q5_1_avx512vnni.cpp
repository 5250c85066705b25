// [NOTE] q5_1 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// 5-bit values 0..31 (nibble + 16 where the bit of qh is set) are the unsigned operand;
// block = a.d * d * isum + a.d * m * a.sum.
// The 16 rows' 32 values of a block go through one 16 x 8 dword transpose; scales by one gather.
// One k-block is 8 vpdpbusd per row: the decode is shared by every row of the call. Left to do:
// transposing the packed bytes (16 x 4 dwords) before unpacking would halve the shuffles.
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q5_1 {
  using Block = BlockQ5_1;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockQ5_1* b, Decoded& D) {
    __m256i v[16];
    for (int c = 0; c < 16; ++c) v[c] = gguf_vnni::add_fifth_bits(gguf_vnni::nibbles32(b[c].qs), b[c].qh);
    gguf_vnni::legacy_transpose(v, D);
    const __m512i w = gguf_vnni::gather_word(b, 0);  // d | m << 16
    D.d = gguf_vnni::half_to_ps(w, 0);
    D.m = gguf_vnni::half_to_ps(w, 16);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<0, true, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_q5_1_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q5_1>(a); }
void down_q5_1_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q5_1>(a); }

KT_KERNEL_ROW(q5_1, kAvx512VnniObj, q8_32, q5_1_q8_32_8x16__avx512vnni)

}  // namespace kt
