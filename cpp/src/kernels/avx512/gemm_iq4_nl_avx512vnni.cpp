// [NOTE] iq4_nl weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Levels kIq4Values + 128 (1..241, one vpshufb) are the unsigned operand;
// block = a.d * d * (isum - 128 * a.sum).
// The 16 rows' 32 values of a block go through one 16 x 8 dword transpose; scales by one gather.
// One k-block is 8 vpdpbusd per row: the decode is shared by every row of the call. Left to do:
// transposing the packed bytes (16 x 4 dwords) before unpacking would halve the shuffles.
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Iq4Nl {
  using Block = BlockIq4Nl;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;

  static void decode(const BlockIq4Nl* b, Decoded& D) {
    const __m256i tab = _mm256_broadcastsi128_si256(gguf_vnni::iq4_levels());
    __m256i v[16];
    for (int c = 0; c < 16; ++c) v[c] = _mm256_shuffle_epi8(tab, gguf_vnni::nibbles32(b[c].qs));
    gguf_vnni::legacy_transpose(v, D);
    D.d = gguf_vnni::half_to_ps(gguf_vnni::gather_word(b, 0), 0);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<128, false, MR>(D, a, acc);
  }
};

}  // namespace

void gateup_iq4_nl_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Iq4Nl>(a); }
void down_iq4_nl_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Iq4Nl>(a); }

KT_KERNEL_ROW(iq4_nl, kAvx512VnniObj, q8_32, iq4_nl_q8_32_8x16__avx512vnni)

}  // namespace kt
