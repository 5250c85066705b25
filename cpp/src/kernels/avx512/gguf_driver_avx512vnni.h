// [NOTE] The AVX512-VNNI driver of the GGUF block types (kernels/avx512/gemm_<type>_avx512vnni.cpp).
//
// Two weight layouts. q4_K, q5_K, q6_K, iq4_xs and q8_0 are word-interleaved at load (formats/
// gguf_word_layout.h: word g of the 16 rows of a k-block is one zmm, lane c = row c); the other
// types stay the file's blocks (GgufPanelBlock: the 16 rows' blocks of a k-block side by side),
// transposed at run time. For each (panel, k-block) the type's decode turns the 16 blocks ONCE
// into the layout of vpdpbusd, then every activation row of the call runs against it:
//
//   Decoded.q[g]   lane c = the unsigned values of row c at k = 4g .. 4g+3 (4 bytes)
//                  | c0: u[4g..4g+3] | c1: u[4g..4g+3] | ... | c15 |      (kK / 4 zmm)
//   row r:  isum_j = sum_{g in sub-block j} vpdpbusd(q[g], broadcast a_r.q[4g..4g+3])
//
// so one vpdpbusd makes 64 products of 16 channels, the weights in registers and the activation
// broadcast from memory (a vpbroadcastd, as gcc emits it: the {1to16} memory operand of vpdpbusd,
// forced by inline asm, measured 25% slower at prefill on Zen 4). From the file's blocks, decoding
// transposes the packed bytes of the 16 blocks (16 x 16 dwords per 64 bytes) and reads the scales
// of the 16 blocks by 16 x 4 dword transposes; from the word layout both are plain loads. Each
// word then unpacks into 4 consecutive k (nibbles, high bits, table values). The decode costs a
// few rows' products, so it is paid once per k-block, not once per row block: the rows' fp32
// accumulators (16 channels each) live in a per-thread buffer across the k-blocks.
// Up to 3 rows (decode) of a word-layout type take fused_rows instead (WordKQuant's, q8_0's): the decoded
// words go straight into vpdpbusd, with no store and reload of Decoded.q. The transposes had cost
// more than the products at m = 1: q4_K at shape A on one Zen 4 core went from 1.75 to 0.65 ms
// per call with the word layout, fused rows and prefetching (the AVX2 kernels on the file's blocks:
// 1.2 ms), and from 12.6 to 11.0 ms at 32 rows per expert.
// No software prefetch in the unfused decode: every distance and hint tried there (1 to 4 k-blocks,
// 4 to 16 KiB, T0/T1/NTA) was as fast as the hardware prefetcher alone or slower.
// Left to do: q2_K, q3_K and the 32-weight types still transpose at run time.
//
// Values are made unsigned (vpdpbusd's first operand) and the offset goes to the activation sums:
//   K-quants (q8_256):  block = a.d * (d * I1 - dmin * I2)
//                       I1 = sum_j sc_j isum_j           (int32, sc the sub-block's integer scale)
//                       I2 = sum_i mc_i . bsums[2i..2i+1] (vpdpwssd: int16 pairs mc per 32 k)
//                       one-scale types (q3_K: -4, q6_K: -32, iq4_xs: -128) fold I2 into I1: d * (I1 - I2)
//   32-weight blocks (q8_32): block = a.d * d * (isum - off * a.sum) [+ a.d * m * a.sum]
// The integer sums are exact; the fp32 part is the reference's (d * a.d * float(I)), fused into
// the row's accumulator with one FMA per block.
//
// Everything here has internal linkage (see avx512_driver.h).
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/avx512/avx512_driver.h"
#include "kernels/row_blocks.h"
#include "kt/cpu_features.h"
#include "kt/gguf_blocks.h"
#include "kt/kernels.h"
#include "runtime/thread_scratch.h"

namespace kt::gguf_vnni {
namespace {

using avx512::bcast32;

// ---- decoding helpers ------------------------------------------------------------------------

// The 32-bit word at byte `off` of each of the 16 blocks (lane c: block c). off + 4 <= sizeof(Block).
template <class Block>
inline __m512i gather_word(const Block* b, int off) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(int(sizeof(Block))));
  return _mm512_i32gather_epi32(idx, reinterpret_cast<const uint8_t*>(b) + off, 1);
}

// The fp16 at bit `shift` (0 or 16) of each lane's word, as fp32 (exact, subnormals included).
inline __m512 half_to_ps(__m512i w, int shift) {
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(w, shift)));
}

// An int16 pair of each lane's int32 values: lo in bits 0..15, hi in 16..31 (both in -32768..32767).
inline __m512i int16_pair(__m512i lo, __m512i hi) {
  return _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi32(0xffff)), _mm512_slli_epi32(hi, 16));
}

// r[c] (row c, 16 dwords) -> r[g] (lane c = dword g of row c).
inline void transpose16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {  // lane L: rows 2i, 2i+1 of dwords 4L, 4L+1 | 4L+2, 4L+3
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + e] lane L: rows 4i..4i+3 of dword 4L + e
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int e = 0; e < 4; ++e) {  // dword 4L + e: lane L of r[e], r[4+e], r[8+e], r[12+e]
    const __m512i ab_lo = _mm512_shuffle_i32x4(r[e], r[4 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i ab_hi = _mm512_shuffle_i32x4(r[e], r[4 + e], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i cd_lo = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i cd_hi = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], _MM_SHUFFLE(3, 2, 3, 2));
    t[e] = _mm512_shuffle_i32x4(ab_lo, cd_lo, _MM_SHUFFLE(2, 0, 2, 0));
    t[4 + e] = _mm512_shuffle_i32x4(ab_lo, cd_lo, _MM_SHUFFLE(3, 1, 3, 1));
    t[8 + e] = _mm512_shuffle_i32x4(ab_hi, cd_hi, _MM_SHUFFLE(2, 0, 2, 0));
    t[12 + e] = _mm512_shuffle_i32x4(ab_hi, cd_hi, _MM_SHUFFLE(3, 1, 3, 1));
  }
  for (int g = 0; g < 16; ++g) r[g] = t[g];
}

// The 64 bytes at byte `off` of each of the 16 blocks, transposed: r[g] lane c = bytes off + 4g ..
// off + 4g + 3 of block c. off + 64 <= sizeof(Block).
template <class Block>
inline void load_transpose16(const Block* b, size_t off, __m512i (&r)[16]) {
  for (int c = 0; c < 16; ++c) r[c] = _mm512_loadu_si512(reinterpret_cast<const uint8_t*>(b + c) + off);
  transpose16(r);
}

// r[c] = | row c (8 dwords) | row c + 8 | for c < 8  ->  r[g] (lane c = dword g of row c), g < 8.
inline void transpose16x8(__m512i (&r)[8]) {
  __m512i t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // r[4i + e] lanes 0..3: rows 4i.. of dword e | 4+e | rows 8+4i.. of e | 4+e
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  const __m512i even = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), odd = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int e = 0; e < 4; ++e) {
    t[e] = _mm512_permutex2var_epi64(r[e], even, r[4 + e]);
    t[4 + e] = _mm512_permutex2var_epi64(r[e], odd, r[4 + e]);
  }
  for (int g = 0; g < 8; ++g) r[g] = t[g];
}

// The 32 bytes at byte `off` of each of the 16 blocks, transposed: r[g] lane c = bytes off + 4g ..
// off + 4g + 3 of block c, g < 8. off + 32 <= sizeof(Block).
template <class Block>
inline void load_transpose16x8(const Block* b, size_t off, __m512i (&r)[8]) {
  auto row = [&](int c) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint8_t*>(b + c) + off)); };
  for (int c = 0; c < 8; ++c) r[c] = _mm512_inserti64x4(_mm512_castsi256_si512(row(c)), row(c + 8), 1);
  transpose16x8(r);
}

// kIq4Values + 128 (1..241), unsigned: iq4_nl's and iq4_xs's levels as vpdpbusd's operand. Built
// at compile time (using kIq4Values at run time would emit its inline variable, a weak symbol, here).
struct Iq4Levels {
  uint8_t v[16];
};
constexpr Iq4Levels kIq4Levels = [] {
  Iq4Levels l{};
  for (int i = 0; i < 16; ++i) l.v[i] = uint8_t(kIq4Values[i] + 128);
  return l;
}();
inline __m128i iq4_levels() { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Levels.v)); }

// The 16 bytes at byte `off` of each of the 16 blocks, transposed: r[e] lane c = bytes off + 4e ..
// off + 4e + 3 of block c, e < 4 (a block's scales: 24 shuffles and loads, cheaper than 4 gathers).
// z[q] lane L holds row q + 4L, so that the 4 x 4 transposes of the lanes leave the rows in order.
template <class Block>
inline void load_transpose16x4(const Block* b, size_t off, __m512i (&r)[4]) {
  auto row = [&](int c) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint8_t*>(b + c) + off)); };
  __m512i z[4];
  for (int q = 0; q < 4; ++q) {
    z[q] = _mm512_castsi128_si512(row(q));
    z[q] = _mm512_inserti32x4(z[q], row(q + 4), 1);
    z[q] = _mm512_inserti32x4(z[q], row(q + 8), 2);
    z[q] = _mm512_inserti32x4(z[q], row(q + 12), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  r[0] = _mm512_unpacklo_epi64(t0, t2);
  r[1] = _mm512_unpackhi_epi64(t0, t2);
  r[2] = _mm512_unpacklo_epi64(t1, t3);
  r[3] = _mm512_unpackhi_epi64(t1, t3);
}

// a | (b & c), bytewise (vpternlogd)
inline __m512i or_and(__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xf8); }

// ---- K-quants: 256-weight super-blocks, q8_256 activations ----------------------------------

// A k-block of a word-interleaved panel (formats/gguf_word_layout.h), the layout of q4_K, q5_K,
// q6_K and iq4_xs here: the driver hands decode the k-block's address as `const Block*`.
// w[g]: word g of the 16 rows (lane c = bytes 4g .. 4g+3 of row c), one load.
template <class Block>
struct Words {
  static constexpr int kWords = int(sizeof(Block) / 4);
  const uint8_t* p;
  explicit Words(const Block* b) : p(reinterpret_cast<const uint8_t*>(b)) {}
  __m512i operator[](int g) const { return _mm512_loadu_si512(p + 64 * g); }
  template <int N>
  void load(int g0, __m512i (&r)[N]) const {
    for (int i = 0; i < N; ++i) r[i] = (*this)[g0 + i];
  }
  // the 16 rows' fp16 tails (sizeof(Block) % 4 == 2: q6_K's d) as fp32
  __m512 tail_half() const { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * kWords))); }
};

struct alignas(64) KBlock {
  __m512i q[kQK / 4];  // q[g] lane c: row c's unsigned values at k = 4g .. 4g+3 (natural order)
  __m512i sc[16];      // int32 integer scale of sub-block j (sub-blocks of 16 or 32 k)
  __m512i mc[8];       // int16 pairs: coefficients of bsums[2i] (bits 0..15) and bsums[2i+1]
  __m512 d, dmin;      // fp32 super-block scales (dmin unused by one-scale types)
};

// The 6-bit scales and mins of q4_K / q5_K and d, dmin from the blocks' first 4 words (d | dmin,
// then 12 bytes of scales), one row per lane.
template <class Block>
inline void q4K_scales(const Words<Block>& w, KBlock& D) {
  const __m512i h = w[0], s0 = w[1], s1 = w[2], s2 = w[3];
  D.d = half_to_ps(h, 0);
  D.dmin = half_to_ps(h, 16);
  const __m512i m63 = _mm512_set1_epi32(63), m15 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3);
  for (int j = 0; j < 4; ++j) {
    const __m512i sc = _mm512_and_si512(_mm512_srli_epi32(s0, 8 * j), m63);
    const __m512i mn = _mm512_and_si512(_mm512_srli_epi32(s1, 8 * j), m63);
    const __m512i sc_hi = _mm512_and_si512(_mm512_srli_epi32(s0, 8 * j + 6), m3);
    const __m512i mn_hi = _mm512_and_si512(_mm512_srli_epi32(s1, 8 * j + 6), m3);
    const __m512i sc4 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 8 * j), m15), _mm512_slli_epi32(sc_hi, 4));
    const __m512i mn4 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 8 * j + 4), m15), _mm512_slli_epi32(mn_hi, 4));
    D.sc[j] = sc;
    D.sc[4 + j] = sc4;
    D.mc[j] = int16_pair(mn, mn);
    D.mc[4 + j] = int16_pair(mn4, mn4);
  }
}

// I2 = sum_i mc_i . bsums[2i..2i+1] of one row
inline __m512i kquant_min_sums(const KBlock& D, const ActQ8x256& a) {
  __m512i i2 = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) i2 = _mm512_dpwssd_epi32(i2, D.mc[i], bcast32(a.bsums + 2 * i));
  return i2;
}

// acc[0..16) += the block's fp32 products of one row from its integer sums I1, I2
template <bool kOneScale>
inline void kquant_accumulate(const KBlock& D, __m512i i1, __m512i i2, const ActQ8x256& a, float* acc) {
  const __m512 ad = _mm512_set1_ps(a.d);
  __m512 y = _mm512_load_ps(acc);
  if constexpr (kOneScale) {
    y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(i1, i2)), _mm512_mul_ps(D.d, ad), y);
  } else {  // d * a.d * I1 - dmin * a.d * I2
    y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(D.d, ad), y);
    y = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(i2), _mm512_mul_ps(D.dmin, ad), y);
  }
  _mm512_store_ps(acc, y);
}

// MR rows (a[r]: the row's activation block of this k-block) against D; acc[16 r ..]: row r's sums.
// kSub: k per sub-block (16 or 32); kOneScale: d = dmin, block = d * (I1 - I2).
template <int kSub, bool kOneScale, int MR>
inline void kquant_rows(const KBlock& D, const ActQ8x256* const* a, float* acc) {
  constexpr int G = kSub / 4, NS = kQK / kSub;
  __m512i i1[MR];
  for (int r = 0; r < MR; ++r) i1[r] = _mm512_setzero_si512();
#pragma GCC unroll 16
  for (int j = 0; j < NS; ++j) {
    __m512i is[MR];
    for (int r = 0; r < MR; ++r) is[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int g = j * G; g < j * G + G; ++g) {
      const __m512i w = D.q[g];
      for (int r = 0; r < MR; ++r) is[r] = _mm512_dpbusd_epi32(is[r], w, bcast32(a[r]->q + 4 * g));
    }
    const __m512i sc = D.sc[j];
    for (int r = 0; r < MR; ++r) i1[r] = _mm512_add_epi32(i1[r], _mm512_mullo_epi32(is[r], sc));
  }
  for (int r = 0; r < MR; ++r)
    kquant_accumulate<kOneScale>(D, i1[r], kquant_min_sums(D, *a[r]), *a[r], acc + kPanelN * r);
}

// The k-block's worth of lines a few KiB on (the stream runs on across panels), before each fused
// k-block (the fused rows of the word layouts); past the matrix's end it touches nothing.
// Where to and how far is the CPU's (stream_prefetch(), kt/cpu_features.h):
//   l2: prefetcht1 16 KiB ahead. On one Zen 4 core at shape A, m = 1, weights from DRAM: the
//       hardware prefetcher alone left the fused rows waiting for memory (q5_K 1.9 ms); prefetcht0
//       3 k-blocks ahead helped (q5_K 1.3-1.5, q6_K 2.0-2.3 ms) but stalled on the burst of L1
//       fills; prefetcht1 took q5_K to 0.85 and q6_K to 1.1 ms; 12 to 20 KiB alike.
//   l1: prefetcht0 4 KiB ahead. On Zen 5 (2 threads, A, M = 8, the memory's fast state of about
//       85 GB/s) prefetcht1 16 KiB left q4_K and iq4_xs at 71-75% of the read bandwidth and
//       prefetcht0 at 4 to 12 KiB took both to 82-87% (16 KiB: 79-80%, 32 KiB: 75%); in the
//       slow state (about 50 GB/s) 100% against 87-91%. 4 KiB against 8: q6_K 79-82% against
//       78-79% (fast), 95-96% against 90% (slow), the other types alike.
// Under l2 only the types that ask (kL2Prefetch) prefetch: q5_K and q6_K read each k-block's words
// out of order (two regions in turn), which the hardware prefetcher does not follow; q4_K and q8_0
// read in order, and on Zen 4 the hardware prefetcher did better alone (q4_K at B, M = 1: 99%
// against 89%; q8_0 at A, M = 8: 82% against 71%). Under l1 every type prefetches: on Zen 5 q4_K
// without ran at 47% of an 85 GB/s probe (3.4 ms per call, iq4_xs with prefetcht1 2.0 ms). The
// unfused decode of more rows lost speed with prefetcht0 on Zen 4 (q4_K, 2 rows: 1.2 to 1.5 ms)
// and takes none.
template <bool kL2Prefetch, class Block>
inline void prefetch_ahead(const Block* b) {
  constexpr size_t kBytes = sizeof(GgufPanelBlock<Block>);
  static const bool to_l1 = stream_prefetch() == StreamPrefetch::l1;
  const char* at = reinterpret_cast<const char*>(b);
  if (to_l1) {
    for (size_t l = 0; l < kBytes; l += 64) _mm_prefetch(at + (size_t(4) << 10) + l, _MM_HINT_T0);
  } else if constexpr (kL2Prefetch) {
    for (size_t l = 0; l < kBytes; l += 64) _mm_prefetch(at + (size_t(16) << 10) + l, _MM_HINT_T1);
  }
}

// A K-quant in the word layout (Words) gives Block, kSub, kOneScale, kL2Prefetch, weights(b, put), which calls
// put(g, q) with each decoded q[g], g = 0, 1, ..., 63 in order, and scales(b, D) (D.sc, D.mc,
// D.d, D.dmin); WordKQuant<T> makes it a driver Format, with fused_rows for a few rows.
template <class T>
struct WordKQuant {
  using Act = ActQ8x256;
  using Decoded = KBlock;
  static constexpr int kMR = 8;

  template <class Block>
  static void decode(const Block* b, KBlock& D) {
    T::weights(b, [&](int g, __m512i q) { D.q[g] = q; });
    T::scales(b, D);
  }
  template <int MR>
  static void rows(const KBlock& D, const ActQ8x256* const* a, float* acc) {
    kquant_rows<T::kSub, T::kOneScale, MR>(D, a, acc);
  }
  // Up to kFusedRows rows (decode): each q[g] goes from its decode straight into the rows'
  // vpdpbusd, with no store and reload of D.q (D holds only the scales), each sub-block's sums
  // scaled as soon as they are complete. a[r]: row r's activation block; acc[16 r ..]: its sums.
  static constexpr int kFusedRows = 3;
  template <int R, class Block>
  static void fused_rows(const Block* b, const ActQ8x256* const* a, float* acc, KBlock& D) {
    constexpr int G = T::kSub / 4;
    prefetch_ahead<T::kL2Prefetch>(b);
    T::scales(b, D);
    __m512i i1[R], is[R];
    for (int r = 0; r < R; ++r) i1[r] = is[r] = _mm512_setzero_si512();
    T::weights(b, [&](int g, __m512i q) {
      for (int r = 0; r < R; ++r) is[r] = _mm512_dpbusd_epi32(is[r], q, bcast32(a[r]->q + 4 * g));
      if (g % G == G - 1) {
        const __m512i sc = D.sc[g / G];
        for (int r = 0; r < R; ++r) {
          i1[r] = _mm512_add_epi32(i1[r], _mm512_mullo_epi32(is[r], sc));
          is[r] = _mm512_setzero_si512();
        }
      }
    });
    for (int r = 0; r < R; ++r)
      kquant_accumulate<T::kOneScale>(D, i1[r], kquant_min_sums(D, *a[r]), *a[r], acc + kPanelN * r);
  }
};

// ---- 32-weight blocks, q8_32 activations ------------------------------------------------------

struct alignas(64) LBlock {
  __m512i q[8];  // q[g] lane c: row c's unsigned values at k = 4g .. 4g+3
  __m512 d, m;   // fp32 scale, and min (types with one)
};

// 16 rows of 32 unsigned bytes (v[c]) -> D.q
inline void legacy_transpose(const __m256i* v, LBlock& D) {
  __m512i r[8];
  for (int c = 0; c < 8; ++c) r[c] = _mm512_inserti64x4(_mm512_castsi256_si512(v[c]), v[c + 8], 1);
  transpose16x8(r);
  for (int g = 0; g < 8; ++g) D.q[g] = r[g];
}

// The 32 4-bit values of 16 bytes qs in k order: low nibbles (k < 16), then high nibbles.
inline __m256i nibbles32(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m4 = _mm_set1_epi8(0x0f);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m4)), _mm_and_si128(_mm_srli_epi16(v, 4), m4), 1);
}

// v + 16 where bit k of the 4 little-endian bytes qh is set (q5_0 / q5_1's fifth bits)
inline __m256i add_fifth_bits(__m256i v, const uint8_t* qh) {
  uint32_t h;
  __builtin_memcpy(&h, qh, 4);
  return _mm256_mask_add_epi8(v, __mmask32(h), v, _mm256_set1_epi8(16));
}

// acc[0..16) += the block's products of one row from its integer sum isum:
// block = a.d * d * (isum - kOff * a.sum)  [+ a.d * m * a.sum  when kMin]
template <int kOff, bool kMin>
inline void legacy_accumulate(const LBlock& D, __m512i isum, const ActQ8x32& a, float* acc) {
  const __m512 ad = _mm512_set1_ps(a.d);
  if constexpr (kOff != 0) isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(kOff * a.sum));
  __m512 y = _mm512_load_ps(acc);
  y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(D.d, ad), y);
  if constexpr (kMin) y = _mm512_fmadd_ps(_mm512_mul_ps(D.m, ad), _mm512_set1_ps(float(a.sum)), y);
  _mm512_store_ps(acc, y);
}

template <int kOff, bool kMin, int MR>
inline void legacy_rows(const LBlock& D, const ActQ8x32* const* a, float* acc) {
  __m512i is[MR];
  for (int r = 0; r < MR; ++r) is[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int g = 0; g < 8; ++g)
    for (int r = 0; r < MR; ++r) is[r] = _mm512_dpbusd_epi32(is[r], D.q[g], bcast32(a[r]->q + 4 * g));
  for (int r = 0; r < MR; ++r) legacy_accumulate<kOff, kMin>(D, is[r], *a[r], acc + kPanelN * r);
}

// ---- the driver --------------------------------------------------------------------------------
// A Format F gives: Block, Act, Decoded, kMR (rows per block), decode(const Block* b16, Decoded&),
// and template <int MR> rows(const Decoded&, const Act* const* a, float* acc). Every type uses
// kMR = 8 (3 x 8 accumulators fit the 32 zmm; 12 rows measured slower for q4_K at m = 32 and 128).

// The calling thread's accumulators: at least `floats` floats, 64-byte aligned (contents undefined).
inline float* acc_buffer(size_t floats) { return reinterpret_cast<float*>(thread_scratch(0, floats * sizeof(float))); }

// The rows [i, i + n) (n <= R) of k-block s against D.
template <class F, int R>
inline void rows_n(int n, const typename F::Decoded& D, const typename F::Act* const* a, float* acc) {
  if constexpr (R > 0) {
    if (n == R) F::template rows<R>(D, a, acc);
    else rows_n<F, R - 1>(n, D, a, acc);
  }
}

// Whether format F decodes a few rows in their products (WordKQuant::fused_rows)
template <class F>
constexpr bool kHasFused = requires { F::kFusedRows; };

// The m <= R rows (row(i): row i's activation row) against k-block s of b, fused (F::fused_rows).
template <class F, int R, class RowOf>
inline void fused_n(int m, const typename F::Block* b, const ActView& act, int s, RowOf row, float* acc,
                    typename F::Decoded& D) {
  if constexpr (R > 0) {
    if (m == R) {
      const typename F::Act* a[R];
      for (int r = 0; r < R; ++r) a[r] = reinterpret_cast<const typename F::Act*>(act.data + act.stride * row(r)) + s;
      F::template fused_rows<R>(b, a, acc, D);
    } else {
      fused_n<F, R - 1>(m, b, act, s, row, acc, D);
    }
  }
}

// Every row of the call against k-block s (decoded in D): acc[16 i ..] += row i's block products.
// row(i): the activation row of row i.
template <class F, class RowOf>
inline void all_rows(const typename F::Decoded& D, const ActView& act, int s, int m, RowOf row, float* acc) {
  using Act = typename F::Act;
  constexpr int MR = F::kMR;
  const int blocks = (m + MR - 1) / MR;
  for (int b = 0; b < blocks; ++b) {
    const int i = block_start(m, blocks, b), n = block_start(m, blocks, b + 1) - i;
    const Act* a[MR];
    for (int r = 0; r < n; ++r) a[r] = reinterpret_cast<const Act*>(act.data + act.stride * row(i + r)) + s;
    rows_n<F, MR>(n, D, a, acc + size_t(kPanelN) * i);
  }
}

// stage 1: h[i, 16p + c] = silu(g) * u, g and u the panel's 16 dot products of row rows[i]
template <class F>
void gateup(const GateUpArgs& a) {
  using PB = GgufPanelBlock<typename F::Block>;
  const int nb = a.act.Kp / PB::kK;
  float* acc_g = acc_buffer(size_t(2) * kPanelN * a.m);
  float* acc_u = acc_g + size_t(kPanelN) * a.m;
  typename F::Decoded D;
  auto row = [&](int i) { return a.rows ? a.rows[i] : i; };
  for (int p = a.p0; p < a.p1; ++p) {
    const PB* g = reinterpret_cast<const PB*>(a.gate->data + a.gate->panel_bytes * p);
    const PB* u = reinterpret_cast<const PB*>(a.up->data + a.up->panel_bytes * p);
    for (size_t k = 0; k < size_t(2) * kPanelN * a.m; ++k) acc_g[k] = 0.f;
    bool fused = false;
    if constexpr (kHasFused<F>) {
      if ((fused = a.m <= F::kFusedRows)) {
        for (int s = 0; s < nb; ++s) {
          fused_n<F, F::kFusedRows>(a.m, g[s].b, a.act, s, row, acc_g, D);
          fused_n<F, F::kFusedRows>(a.m, u[s].b, a.act, s, row, acc_u, D);
        }
      }
    }
    for (int s = 0; s < nb && !fused; ++s) {
      F::decode(g[s].b, D);
      all_rows<F>(D, a.act, s, a.m, row, acc_g);
      F::decode(u[s].b, D);
      all_rows<F>(D, a.act, s, a.m, row, acc_u);
    }
    for (int i = 0; i < a.m; ++i)
      _mm512_storeu_ps(a.h + a.ldh * i + p * kPanelN,
                       avx512::gated(_mm512_load_ps(acc_g + kPanelN * i), _mm512_load_ps(acc_u + kPanelN * i), a.glu,
                                     p * kPanelN));
  }
}

// stage 2: out[tok[i], 16p + c] += weight[i] * y, y the panel's 16 dot products of row i
template <class F>
void down(const DownArgs& a) {
  using PB = GgufPanelBlock<typename F::Block>;
  const int nb = a.act.Kp / PB::kK;
  float* acc = acc_buffer(size_t(kPanelN) * a.m);
  typename F::Decoded D;
  auto row = [](int i) { return i; };
  for (int p = a.p0; p < a.p1; ++p) {
    const PB* w = reinterpret_cast<const PB*>(a.down->data + a.down->panel_bytes * p);
    for (size_t k = 0; k < size_t(kPanelN) * a.m; ++k) acc[k] = 0.f;
    bool fused = false;
    if constexpr (kHasFused<F>) {
      if ((fused = a.m <= F::kFusedRows))
        for (int s = 0; s < nb; ++s) fused_n<F, F::kFusedRows>(a.m, w[s].b, a.act, s, row, acc, D);
    }
    for (int s = 0; s < nb && !fused; ++s) {
      F::decode(w[s].b, D);
      all_rows<F>(D, a.act, s, a.m, row, acc);
    }
    for (int i = 0; i < a.m; ++i) {
      float* o = a.out + a.ldo * a.tok[i] + p * kPanelN;
      _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(a.weight[i]), _mm512_load_ps(acc + kPanelN * i),
                                          _mm512_loadu_ps(o)));
    }
  }
}

}  // namespace
}  // namespace kt::gguf_vnni
