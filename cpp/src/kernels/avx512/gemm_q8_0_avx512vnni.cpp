// [NOTE] q8_0 weights x q8_32 activations with AVX512-VNNI (driver: gguf_driver_avx512vnni.h).
// Weights word-interleaved at load (formats/gguf_word_layout.h): a k-block (32 k, the 16 rows'
// blocks) is 8 words of qs, word g lane c = row c's int8 at k = 4g .. 4g+3, then the 16 fp16 d.
// Decode: each word made unsigned (q + 128, one xor) and d by one conversion; no transposes (they
// had held q8_0's decode to 24 GB/s per core from the L3).
//   block = a.d * d * (sum_k (q + 128) a.q[k] - 128 * a.sum)        (isum exact in int32)
// Up to kFusedRows rows per expert (decode) take each word from its load straight into their
// vpdpbusd, prefetching the stream only where the CPU wants it in L1 (see prefetch_ahead); more rows
// share the decoded k-block.
#include "formats/gguf_word_layout.h"
#include "kernels/avx512/gguf_driver_avx512vnni.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q8_0 {
  using Block = BlockQ8_0;
  using Act = ActQ8x32;
  using Decoded = gguf_vnni::LBlock;
  static constexpr int kMR = 8;
  static constexpr int kFusedRows = 3;

  static __m512i unsigned_word(const gguf_vnni::Words<BlockQ8_0>& w, int g) {
    return _mm512_xor_si512(w[g], _mm512_set1_epi8(char(0x80)));
  }
  static void decode(const BlockQ8_0* b, Decoded& D) {
    const gguf_vnni::Words<BlockQ8_0> w(b);
    for (int g = 0; g < 8; ++g) D.q[g] = unsigned_word(w, g);
    D.d = w.tail_half();
  }
  template <int MR>
  static void rows(const Decoded& D, const Act* const* a, float* acc) {
    gguf_vnni::legacy_rows<128, false, MR>(D, a, acc);
  }
  template <int R>
  static void fused_rows(const BlockQ8_0* b, const Act* const* a, float* acc, Decoded& D) {
    gguf_vnni::prefetch_ahead</*kL2Prefetch=*/false>(b);
    const gguf_vnni::Words<BlockQ8_0> w(b);
    __m512i is[R];
    for (int r = 0; r < R; ++r) is[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      const __m512i q = unsigned_word(w, g);
      for (int r = 0; r < R; ++r) is[r] = _mm512_dpbusd_epi32(is[r], q, gguf_vnni::bcast32(a[r]->q + 4 * g));
    }
    D.d = w.tail_half();
    for (int r = 0; r < R; ++r) gguf_vnni::legacy_accumulate<128, false>(D, is[r], *a[r], acc + kPanelN * r);
  }
};

}  // namespace

void gateup_q8_0_q8_32_8x16__avx512vnni(const GateUpArgs& a) { gguf_vnni::gateup<Q8_0>(a); }
void down_q8_0_q8_32_8x16__avx512vnni(const DownArgs& a) { gguf_vnni::down<Q8_0>(a); }

KT_KERNEL_ROW_IN(q8_0, kAvx512VnniObj, q8_32, q8_0_q8_32_8x16__avx512vnni, q8_0_words)

}  // namespace kt
