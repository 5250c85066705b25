// [NOTE] q4_K weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). A block decodes
// to 8 ymm of nibbles (chunk 2c: the low nibbles of qs[32c ..], chunk 2c + 1: the high ones), the
// 8 six-bit scales broadcast per chunk, and the 8 mins paired with the activation's bsums. Per row:
//   isum = sum_j pmaddwd(pmaddubsw(q_j, a_j), sc_j)        (pairs at most 2 * 15 * 127)
//   msum = pmaddwd(bsums, mins)                             (m_j (bsums[2j] + bsums[2j + 1]))
// and the block adds d * a.d * isum - dmin * a.d * msum, as formats/q4_K.cpp's dot_block.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q4_KCodec {
  using Block = BlockQ4_K;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = true;
  struct Aux {
    __m256i sc[8];
    __m256i mins;
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = b.dmin; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    avx2::q4K_nibbles(b.qs, w);
    __m128i sc;
    avx2::q4K_scales(b.scales, sc, aux.mins);
    avx2::scales_per_32(sc, aux.sc);
  }
  // the driver's transposed prefill: 8 pmaddubsw of nibbles sum in int16 (8 * 2 * 15 * 127 < 2^15)
  static constexpr bool kTransposable = true;
  static constexpr int kStepsPerSum = 8;
  static void decode_t(const Block& b, __m256i (&w)[8], __m128i& sc, __m128i& m) {
    avx2::q4K_nibbles(b.qs, w);
    __m256i mins;
    avx2::q4K_scales(b.scales, sc, mins, &m);
  }
  static void dot(const __m256i (&w)[8], const Aux& aux, const Act& a, __m256i& isum, __m256i& msum) {
    isum = avx2::dot_chunks8(w, aux.sc, a.q);
    msum = _mm256_madd_epi16(avx2::load256(a.bsums), aux.mins);
  }
  static __m256 accumulate(__m256 acc, __m256i v, __m256i mv, __m256 D, __m256 M, const Act& a) {
    return avx2::scaled_min(acc, v, mv, D, M, a.d);
  }
};

}  // namespace

void gateup_q4_K_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q4_KCodec>::gateup(a); }
void down_q4_K_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q4_KCodec>::down(a); }

KT_KERNEL_ROW(q4_K, kAvx2Obj, q8_256, q4_K_q8_256_16x16__avx2)

}  // namespace kt
