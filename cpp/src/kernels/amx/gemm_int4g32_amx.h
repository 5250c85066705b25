// [NOTE] int4_g32 weights x q8s activations on AMX tiles (driver: amx_moe_driver.h). One K step is
// one group of 32 k: tdpbsud takes the activations (signed) as A and the nibbles (0..15, unsigned)
// as B, the same products as vpdpbusd in the AVX512-VNNI kernel, and the int32 group sums are
// exact on both. The epilogue runs after every group, as that kernel's, in its order:
//   acc += cvt(isum_g) * d_g;  acc += m_g * gsum_a[g]       and at the end  y = acc * s_a
//
// The packed group-panel (formats/int4_g32.cpp) holds each k-step pair in one 64-byte block; the
// B tile of a group is unpacked from it once per panel and call (8 rows of 16 dwords, VNNI):
//
//   packed group g (320 B)                           B tile of group g (8 x 64 B)
//   block j: byte 4c+i = q[c,8j+i] | q[c,8j+4+i]<<4  row 2j   = block j & 0xf          (k 8j..8j+3)
//            (j = 0..3, 64 B each)                   row 2j+1 = block j >> 4 & 0xf     (k 8j+4..8j+7)
//   d: 16 x fp16 | m: 16 x fp16                      (read from the packed panel in the epilogue)
//
//   A tile: 16 token rows x 32 bytes (q8s of k 32g..32g+31)       C tile: 16 rows x 16 int32
#pragma once
#include "kernels/amx/amx_moe_driver.h"
#include "kernels/int4_act.h"

namespace kt::amx {
namespace {

// kZeroPoint: int4_g32_zp's blocks, whose m holds -z: the group minimum is d * m in fp32 (exact).
// kAct: q8s, or q8_32 (kernels/int4_act.h), whose scale applies per group, in the AVX512 kernel's
// order: acc += (cvt(isum_g) * d_g + m_g * gsum_a[g]) * s_a[g]; the rows' q bytes are gathered
// out of their blocks into the A tiles' rows.
template <bool kZeroPoint, ActFormat kAct>
struct Int4G32Amx {
  using Act = Int4Act<kAct>;
  static constexpr int a_colsb = 32, b_rows = 8;
  static constexpr size_t b_step_bytes = 512;
  static constexpr bool per_step = true;
  static int steps(int Kp) { return Kp / Int4G32Block::kK; }
  static size_t act_bytes(int Kp) { return size_t(Kp); }

  template <class Tiles, int C, int A, int B>
  static void tdp() { Tiles::template dpbsud<C, A, B>(); }

  static const uint8_t* b_tiles(const uint8_t* panel, int Kp, uint8_t* buf) {
    const __m512i nib = _mm512_set1_epi8(0x0f);
    for (int g = 0; g < steps(Kp); ++g)
      for (int j = 0; j < Int4G32Block::kSteps; ++j) {
        const __m512i v = _mm512_loadu_si512(reinterpret_cast<const Int4G32Block*>(panel)[g].q[j]);
        uint8_t* rows = buf + b_step_bytes * g + 128 * j;
        _mm512_storeu_si512(rows, _mm512_and_si512(v, nib));
        _mm512_storeu_si512(rows + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
      }
    return buf;
  }

  // d and m of group g for the panel's 16 channels
  static void group_scales(const uint8_t* panel, int g, __m512* d, __m512* m) {
    const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(panel)[g];
    *d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.d)));
    *m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.m)));
    if constexpr (kZeroPoint) *m = _mm512_mul_ps(*d, *m);
  }

  // one row's C dwords c of group g, with that row's group sum gsum (as a float) and, for q8_32,
  // group scale gscale
  static __m512 step(__m512 acc, const int32_t* c, __m512 d, __m512 m, float gsum, float gscale) {
    if constexpr (Act::kGroupScale) {
      const __m512 y = _mm512_fmadd_ps(m, _mm512_set1_ps(gsum), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c)), d));
      return _mm512_fmadd_ps(y, _mm512_set1_ps(gscale), acc);
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c)), d, acc);
    return _mm512_fmadd_ps(m, _mm512_set1_ps(gsum), acc);
  }

  static __m512 finish(__m512 acc, float scale) { return _mm512_mul_ps(acc, _mm512_set1_ps(scale)); }
};

}  // namespace
}  // namespace kt::amx
