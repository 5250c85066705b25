// [NOTE] int4_g32 and int4_g32_zp weights x q8s activations with AVX2 + F16C. Per group g of 32 k, row r:
//   isum = sum_k q_w q_a                          (int32 per channel)
//   acc += cvt(isum) * d[g] + m[g] * gsum_a[r,g]  (fp32, d and m widened from fp16)
// and at the end acc *= s_a[r], as in the reference.
// The 4-product dot is pmaddubsw (u8 nibble x s8, pairs at most 2 * 15 * 128 = 3840). Unlike the
// AVX512 tile, the 8 pmaddubsw results of a group are summed in int16 (at most 8 * 3840 = 30720
// < 2^15, exact) and widened once per group with pmaddwd. The integer sums equal the reference's;
// the fp32 accumulation uses FMA, so results differ from it by fp32 rounding only.
// The matrices take turns of kTurnGroups groups: 16 ymm registers hold the fp32 accumulators and
// int16 sums of one matrix, not of two, so blocks take both panel halves in one pass, and the
// other matrix's accumulators wait in memory. Turns rather than one matrix after
// the other keep both matrices' streams going, as the hardware prefetcher runs ahead on each
// (faster at decode; 32 groups per turn no better than whole matrices: docs/benchmarks/notes.md,
// "Register blocks"). The rows' group sums are widened to
// fp32 once per turn, and each group broadcasts its own from memory (a load, not a convert and a
// shuffle per row and group).
// Layout in formats/int4_g32.cpp. kZeroPoint: int4_g32_zp's blocks, whose m holds -z: the group
// minimum is d * m, formed in fp32 (exact). Act: q8s as above, or q8_32 (kernels/int4_act.h), whose
// scale s_a[r,g] is per group: acc += (cvt(isum) * d[g] + m[g] * gsum_a[r,g]) * s_a[r,g].
#include "kernels/avx2/avx2_driver.h"
#include "kernels/int4_act.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

constexpr int kGroupK = Int4G32Block::kK;
constexpr int kGroupLines = sizeof(Int4G32Block) / 64;  // cache lines of one group-panel
// Groups per turn of a matrix (2.5 KiB of it); one group sum convert of a row serves 8 groups.
constexpr int kTurnGroups = 8;

template <bool kZeroPoint, ActFormat kAct>
struct Int4G32Tile {
  using Act = Int4Act<kAct>;
  static constexpr int max_rows(int) { return 4; }
  // Every block takes the whole panel in one pass. Up to 2 rows, the acc, sum16, lo and hi of one
  // matrix fit the 16 ymm; 3 and 4 rows spill some (27 stack accesses in the 280 instructions of a
  // 4-row group), and still beat one half per pass, from DRAM and in L2 (docs/benchmarks/notes.md).
  static constexpr int halves(int, int) { return 2; }

  // matrix t, the groups g0 .. g0 + gn - 1 (gn <= kTurnGroups) added to acc[r][h] for rows r and
  // halves h0 + h; gsf[r][i]: row r's activation sum of group g0 + i as fp32, gsc[r][i] its scale
  // (q8_32)
  template <int MR, int NH>
  static void turn(const uint8_t* w, int t, int h0, int g0, int gn, const ActView& act, const int* rows,
                   const float (&gsf)[MR][kTurnGroups], const float (&gsc)[MR][kTurnGroups], const NextPanels& pf,
                   __m256 (&acc)[MR][NH]) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int g = g0; g < g0 + gn; ++g) {
      const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(w)[g];
      for (int l = 0; l < kGroupLines; ++l) pf.touch(t, kGroupLines * g + l);
      const int8_t* x[MR];
      for (int r = 0; r < MR; ++r) x[r] = Act::q(act, rows[r], g);
      __m256i sum16[MR][NH];
#pragma GCC unroll 4
      for (int j = 0; j < Int4G32Block::kSteps; ++j) {
        __m256i lo[NH], hi[NH];
        for (int h = 0; h < NH; ++h) {
          __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.q[j] + (h0 + h) * 32));
          lo[h] = _mm256_and_si256(v, nib);                         // k = 8j .. 8j+3
          hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);  // k = 8j+4 .. 8j+7
        }
        for (int r = 0; r < MR; ++r) {
          __m256i a_lo = avx2::bcast32(x[r] + j * 8);
          __m256i a_hi = avx2::bcast32(x[r] + j * 8 + 4);
          for (int h = 0; h < NH; ++h) {
            __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], a_lo), _mm256_maddubs_epi16(hi[h], a_hi));
            sum16[r][h] = j == 0 ? p : _mm256_add_epi16(sum16[r][h], p);
            avx2::keep_in_register(sum16[r][h]);
          }
        }
      }
      for (int h = 0; h < NH; ++h) {
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.d + (h0 + h) * avx2::kHalfN)));
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.m + (h0 + h) * avx2::kHalfN)));
        if constexpr (kZeroPoint) m = _mm256_mul_ps(d, m);
        for (int r = 0; r < MR; ++r) {
          __m256i isum = _mm256_madd_epi16(sum16[r][h], ones);
          if constexpr (Act::kGroupScale) {
            const __m256 y = _mm256_fmadd_ps(m, _mm256_broadcast_ss(&gsf[r][g - g0]),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(isum), d));
            acc[r][h] = _mm256_fmadd_ps(y, _mm256_broadcast_ss(&gsc[r][g - g0]), acc[r][h]);
          } else {
            acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[r][h]);
            acc[r][h] = _mm256_fmadd_ps(m, _mm256_broadcast_ss(&gsf[r][g - g0]), acc[r][h]);
          }
        }
      }
    }
  }

  template <int NM, int MR, int NH>
  static void compute(const uint8_t* const* w, int h0, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m256 (&acc)[NM][MR][NH]) {
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h) acc[t][r][h] = _mm256_setzero_ps();
    const int G = Kp / kGroupK;
    for (int g0 = 0; g0 < G; g0 += kTurnGroups) {
      const int gn = G - g0 < kTurnGroups ? G - g0 : kTurnGroups;
      alignas(32) float gsf[MR][kTurnGroups], gsc[MR][kTurnGroups];
      for (int r = 0; r < MR; ++r) {
        if constexpr (Act::kGroupScale) {
          for (int i = 0; i < gn; ++i) {
            gsf[r][i] = float(Act::sum(act, rows[r], g0 + i));
            gsc[r][i] = Act::group_scale(act, rows[r], g0 + i);
          }
        } else {  // q8s: the row's group sums are contiguous
          const int32_t* gs = act.gsum + size_t(act.gsum_stride) * rows[r] + g0;
          if (gn == kTurnGroups)
            _mm256_store_ps(gsf[r], _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(gs))));
          else
            for (int i = 0; i < gn; ++i) gsf[r][i] = float(gs[i]);
        }
      }
      // unrolled, so that each matrix's sums are registers, not an array indexed at run time (on the
      // stack)
#pragma GCC unroll 4
      for (int t = 0; t < NM; ++t) turn<MR, NH>(w[t], t, h0, g0, gn, act, rows, gsf, gsc, pf, acc[t]);
    }
    if constexpr (!Act::kGroupScale)
      for (int r = 0; r < MR; ++r) {
        const __m256 s = _mm256_set1_ps(Act::row_scale(act, rows[r]));
        for (int t = 0; t < NM; ++t)
          for (int h = 0; h < NH; ++h) acc[t][r][h] = _mm256_mul_ps(acc[t][r][h], s);
      }
  }
};

}  // namespace

void gateup_int4g32_q8s_4x16__avx2(const GateUpArgs& a) { avx2::gateup<Int4G32Tile<false, ActFormat::q8s>>(a); }
void down_int4g32_q8s_4x16__avx2(const DownArgs& a) { avx2::down<Int4G32Tile<false, ActFormat::q8s>>(a); }
void gateup_int4g32zp_q8_32_4x16__avx2(const GateUpArgs& a) { avx2::gateup<Int4G32Tile<true, ActFormat::q8_32>>(a); }
void down_int4g32zp_q8_32_4x16__avx2(const DownArgs& a) { avx2::down<Int4G32Tile<true, ActFormat::q8_32>>(a); }

KT_KERNEL_ROW(int4_g32, kAvx2Obj, q8s, int4g32_q8s_4x16__avx2)
KT_KERNEL_ROW(int4_g32_zp, kAvx2Obj, q8_32, int4g32zp_q8_32_4x16__avx2)

}  // namespace kt
