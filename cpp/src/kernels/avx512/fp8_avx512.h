// e4m3 to bf16 on AVX512BW, shared by the fp8_g128 kernel files (internal linkage: see
// avx512_driver.h). Every e4m3 value is a bf16 value (4 significant bits, exponents 2^-9 ..
// 2^8), built byte by byte from 16-entry tables (vpshufb), exact for every code but NaN (the
// loader refuses those). For b = s eeee mmm (exponent E, bias 7):
//   normal (E > 0): bf16 exponent E + 120, mantissa m << 4, so
//                   high byte = s | 60 + (E >> 1)   (a table on b's high nibble s, E >> 1)
//                   low byte  = (E & 1) << 7 | m << 4 = (b & 0x0f) << 4
//   E = 0:          m * 2^-9 (m = 0: zero), corrected by tables on m: the high byte lowered by
//                   1 (m = 1..3) or 60 (zero), the low byte replaced.
// The word layout (kt/format_blocks.h, Fp8G128Block) puts each 128-bit lane's k pair (4g, 4g+1)
// in its low 8 bytes and (4g+2, 4g+3) in its high 8, so that vpunpck{l,h}bw of the low and high
// bytes give vdpbf16ps's pairs with dword c = channel c.
#pragma once
#include <immintrin.h>

namespace kt::avx512 {
namespace {

// Word w of an Fp8G128Block as bf16 pairs: k01 lane c = channel c's (4g, 4g+1), k23 its
// (4g+2, 4g+3).
inline void fp8_word_to_bf16(__m512i w, __m512i& k01, __m512i& k23) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i hi_table = _mm512_broadcast_i32x4(  // s<<3 | E>>1  ->  s<<7 | 60 + (E>>1)
      _mm_setr_epi8(60, 61, 62, 63, 64, 65, 66, 67, char(0xbc), char(0xbd), char(0xbe), char(0xbf), char(0xc0),
                    char(0xc1), char(0xc2), char(0xc3)));
  const __m512i sub_hi_drop = _mm512_broadcast_i32x4(_mm_setr_epi8(60, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
  const __m512i sub_lo = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 0, char(0x80), char(0xc0), 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0));
  const __m512i lo4 = _mm512_and_si512(w, nib);
  const __m512i hi4 = _mm512_and_si512(_mm512_srli_epi16(w, 4), nib);
  const __mmask64 e0 = _mm512_testn_epi8_mask(w, _mm512_set1_epi8(0x78));  // exponent 0: subnormal or zero
  __m512i hi = _mm512_shuffle_epi8(hi_table, hi4), lo = _mm512_slli_epi16(lo4, 4);
  // A word of a real release rarely holds a zero or subnormal (about 1 weight in 10^4 for Gaussian
  // weights): skipping their 3 operations otherwise made a decode word 15-20% cheaper.
  if (__builtin_expect(e0 != 0, 0)) {
    hi = _mm512_sub_epi8(hi, _mm512_maskz_shuffle_epi8(e0, sub_hi_drop, lo4));
    lo = _mm512_mask_shuffle_epi8(lo, e0, sub_lo, lo4);
  }
  k01 = _mm512_unpacklo_epi8(lo, hi);
  k23 = _mm512_unpackhi_epi8(lo, hi);
}

}  // namespace
}  // namespace kt::avx512
