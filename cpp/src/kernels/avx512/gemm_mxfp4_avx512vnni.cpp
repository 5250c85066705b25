// [NOTE] mxfp4 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h): a k-block (32 k, the 16 rows'
// blocks) is 4 words of qs, word g lane c = row c's nibbles of k = 4g .. 4g+3 (low) and
// 16 + 4g .. 16 + 4g + 3 (high), then the 16 exponent bytes. Decode: per word a mask and a shift,
// and one vpshufb each into the doubled e2m1 levels + 128 (116..140, vpdpbusd's unsigned operand);
// no transposes (the file's layout needed a 16 x 8 dword transpose per block: 36% of the read
// bandwidth at M = 1 on shape A, against 26% of the int8 peak at M = 512).
//   block = a.d * 2^(e-128) * (sum_k (v + 128) a.q[k] - 128 * a.sum)        (isum exact in int32)
// Up to kFusedRows rows per expert (decode) take each word from its load straight into their
// vpdpbusd, prefetching the stream only where the CPU wants it in L1 (see prefetch_ahead); more
// rows share the decoded k-block. Reference: formats/mxfp4.cpp.
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Mxfp4Levels {
  uint8_t v[16];
};
constexpr Mxfp4Levels kMxfp4Levels = [] {
  Mxfp4Levels l{};
  for (int i = 0; i < 16; ++i) l.v[i] = uint8_t(kMxfp4Values[i] + 128);
  return l;
}();

struct Mxfp4 {
  using Block = BlockMxfp4;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  using Words = gguf_vnni::Words<BlockMxfp4>;
  static constexpr int kMR = 8;
  static constexpr int kFusedRows = 3;

  static __m512i levels() {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Levels.v)));
  }
  // the unsigned levels of word g's low nibbles (k = 4g..4g+3) and high nibbles (k = 16+4g..)
  static void word(const Words& w, int g, __m512i tab, __m512i& lo, __m512i& hi) {
    const __m512i v = w[g], m4 = _mm512_set1_epi8(0x0f);
    lo = _mm512_shuffle_epi8(tab, _mm512_and_si512(v, m4));
    hi = _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
  }
  // 2^(e - 128) of the 16 rows: the fp32 bits e << 23 are 2^(e - 127) for e >= 1 (2^-127 for
  // e = 0), halved exactly
  static __m512 scales(const Words& w) {
    const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.p + 64 * Words::kWords)));
    const __m512i bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), _mm512_testn_epi32_mask(e, e),
                                               _mm512_set1_epi32(0x00400000));
    return _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(0.5f));
  }
  static void decode(const BlockMxfp4* b, Decoded& D) {
    const Words w(b);
    const __m512i tab = levels();
    for (int g = 0; g < 4; ++g) word(w, g, tab, D.q[g], D.q[4 + g]);
    D.d = scales(w);
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<128, false, MR>(D, a, acc);
  }
  template <int R>
  static void fused_rows(const BlockMxfp4* b, const Act* const* a, float* acc, Decoded& D) {
    gguf_vnni::prefetch_ahead</*kL2Prefetch=*/false>(b);
    const Words w(b);
    const __m512i tab = levels();
    __m512i is[R];
    for (int r = 0; r < R; ++r) is[r] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      __m512i lo, hi;
      word(w, g, tab, lo, hi);
      for (int r = 0; r < R; ++r) {
        is[r] = _mm512_dpbusd_epi32(is[r], lo, gguf_vnni::bcast32(a[r]->q + 4 * g));
        is[r] = _mm512_dpbusd_epi32(is[r], hi, gguf_vnni::bcast32(a[r]->q + 16 + 4 * g));
      }
    }
    D.d = scales(w);
    for (int r = 0; r < R; ++r) gguf_vnni::legacy_accumulate<128, false>(D, is[r], *a[r], acc + kPanelN * r);
  }
};

}  // namespace

void gateup_mxfp4_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Mxfp4>(a); }
void down_mxfp4_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Mxfp4>(a); }

KT_KERNEL_ROW_IN(mxfp4, kAvx512VnniObj, q8_32, mxfp4_q8_32_8x16__avx512vnni, mxfp4_words)

}  // namespace kt
