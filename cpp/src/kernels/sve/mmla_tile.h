// [NOTE] SMMLA row-pair tiles of the sve kernels (gemm_int8pc_sve.cpp, gemm_int4g32_sve.cpp), on
// the formats' own packed layouts, for any vector length. Internal linkage, like every ISA header.
//
// SVE's SMMLA (svmmla_s32) works per 128-bit segment: each multiplies its own 2x8 int8 matrix
// (two activation rows) by its own 8x2 (two channels, over the same 8 k) into 2x2 int32:
//
//   a = [ x[r0, k..k+7] | x[r1, k..k+7] ]          the same in every segment (row pair p)
//   b = [ W[c, k..k+7]  | W[c+1, k..k+7] ]         a channel pair per segment
//   z += [ r0.c  r0.c+1  r1.c  r1.c+1 ]            per segment
//
// so one instruction computes 2 rows x (2 VL/128) channels x 8 k: 32 multiply-adds per 128 bits,
// SDOT's 16. A weight vector of a packed panel holds, in 32-bit lane i, channel c0 + i's 4 k
// (int8_pc: block s; int4_g32: a step's low or high nibbles), the vector's L = VL/32 lanes (16
// channels from 512 bits on, where panel_b8 loads only the panel's 64 bytes and leaves the rest
// zero). Two of them, k..k+3 (lo) and k+4..k+7 (hi), zipped by 32-bit lanes over the whole vector:
//
//   lo = [c0 k0-3 | c1 k0-3 | c2 k0-3 | ...]   zip1 = [c0 k0-3 | c0 k4-7 | c1 k0-3 | c1 k4-7] [c2 ..
//   hi = [c0 k4-7 | c1 k4-7 | c2 k4-7 | ...]   zip2 = the same of the vector's upper L/2 lanes
//
// ZIP1 interleaves the lower halves of lo and hi, ZIP2 the upper ones, so zip1's segment i is the
// channel pair c0 + 2i, c0 + 2i + 1 and zip2's c0 + L/2 + 2i, ..:
//   VL 128 (VPP 4): vector v = channels 4v..4v+3; zip1 = pair 4v, zip2 = pair 4v+2 (1 segment)
//   VL 256 (VPP 2): vector v = 8v..8v+7;  zip1 = 8v..8v+3, zip2 = 8v+4..8v+7 (2 segments)
//   VL 512 (VPP 1): channels 0..7 and 8..15 (4 segments each)
//   VL >= 1024:     zip1 alone holds all 16 channels (lanes 0..31: 8 segments) and zip2 only the
//                   zeros above the panel: one zip per vector (Zips = 1, with_zips)
// Each zipped register feeds one SMMLA per row pair: P Zips accumulators per weight vector a pass
// keeps.
//
// Activations: a row pair's 8 k in every segment by two LD1RQB under an 8-byte predicate and TRN1
// on 64-bit lanes (act_pair), or 16 k (two steps) by two full LD1RQB, TRN1 and TRN2
// (act_pairs_16k). A block of MR rows is P = ceil(MR / 2) row pairs; an odd block pairs its last
// row with itself (the copy's sums are dropped). The sums of a zip pair (z0 = zip1's, z1 =
// zip2's) come out per row by UZP1 / UZP2 on 64-bit lanes: UZP1(z0, z1) = row r0's channels
// c0..c0+L-1 in order (at Zips 1: UZP1(z0, z0), whose lanes 0..15 are r0's 16 channels), UZP2 row
// r1's; the formats' epilogues then run per row, as their vector rows do (the same fp32
// operations on the same int32 sums: the same bits).
//
// Per weight (the files' [NOTE]s have the details): bytes as the vector rows (int8_pc 1,
// int4_g32 0.625), loaded once per row block; one SMMLA per 16 VL/128 weights and row pair (VL
// 128: 16, 256: 32, 512: 64, from 1024 bits on: 128, the most one panel's 16 channels fill), half
// the SDOT vector rows' per row (a quarter from 1024 bits on, where an SDOT vector is half the
// panel's padding). Row blocks: int8_pc 6, 10, 20 rows at VL 128, 256,
// >= 512; int4_g32 8 at every VL (the most that GCC 12 keeps in the 32 registers without spills).
#pragma once
#include <arm_sve.h>

#include <cstdint>
#include <type_traits>

#include "kernels/sve/sve_driver.h"

namespace kt::sve {
namespace {

// The min_m of the row-pair tiles: from 2 tokens an expert's rows fill the row pairs; a single row
// (decode) would waste half of each SMMLA and runs on the format's SDOT vector row instead (the
// value of neon's kRowPairMinM; not timed on SVE hardware).
constexpr int kRowPairMinM = 2;

// Row pair p of a block's MR rows: rows 2p and 2p + 1, or 2p twice where 2p + 1 == MR.
template <int MR>
struct RowPairs {
  static constexpr int P = (MR + 1) / 2;
  static constexpr int second(int p) { return 2 * p + 1 < MR ? 2 * p + 1 : 2 * p; }
};

// Calls f(Ix<Zips>{}): the zipped registers per weight vector, 2, or 1 from 1024 bits on (VPP 1
// with more than 16 lanes), where zip1 holds the whole panel.
template <int VPP, class F>
[[gnu::always_inline]] inline void with_zips(F&& f) {
  if constexpr (VPP == 1)
    if (svcntw() > unsigned(kPanelN)) return f(Ix<1>{});
  f(Ix<2>{});
}

// sve_driver.h's Tile compute for a row-pair tile: Tile::compute_zips at this vector length's Zips.
template <class Tile>
struct ZipsDispatch {
  template <int VPP, int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float (&y)[NM][MR][kPanelN]) {
    with_zips<VPP>([&](auto zips) { Tile::template compute_zips<VPP, NM, MR, decltype(zips)::value>(w, Kp, act, rows, y); });
  }
};

// `at` (a pointer or a vector), made to depend on v in the compiler's eyes only (an empty asm: no
// instruction, so no dependency in the core), so that GCC schedules what reads it after what
// produces v: GCC 12 hoists a tile's weight loads above the previous vector's SMMLA, and an
// epilogue's conversions above the previous rows', and spills registers to hold them. (A
// "memory" barrier, or an asm that writes a variable a lambda captures, put the KT_SVE_BANK
// accumulators in memory.)
template <class T, class V>
[[gnu::always_inline]] inline T order_after(T at, V v) {
  if constexpr (std::is_pointer_v<T>) asm("" : "+r"(at) : "w"(v));
  else asm("" : "+w"(at) : "w"(v));
  return at;
}

// SMMLA's left operand: the n = 8 k at x0 and at x1, [x0 | x1] in every segment; n = 4: the last
// 4 k of a K that is 4 mod 8 (int8_pc), then zeros. LD1RQB under pg, a predicate of n bytes (it
// reads nothing past them), whose [Xn, Xm] addressing needs no address arithmetic per row.
inline svint8_t act_pair(svbool_t pg, const int8_t* x0, const int8_t* x1) {
  const svint64_t r0 = svreinterpret_s64_s8(svld1rq_s8(pg, x0)), r1 = svreinterpret_s64_s8(svld1rq_s8(pg, x1));
  return svreinterpret_s8_s64(svtrn1_s64(r0, r1));
}

// The 8 bytes at x0 and at x1 (8 k of int8, 4 of bf16), [x0 | x1] in every segment.
inline svint8_t act_pair_8k(const int8_t* x0, const int8_t* x1) { return act_pair(svptrue_pat_b8(SV_VL8), x0, x1); }

// The 16 k at x0 and at x1 as two left operands: k..k+7 (first) and k+8..k+15 (second).
inline void act_pairs_16k(const int8_t* x0, const int8_t* x1, svint8_t& first, svint8_t& second) {
  const svint64_t r0 = svreinterpret_s64_s8(svld1rq_s8(svptrue_b8(), x0));
  const svint64_t r1 = svreinterpret_s64_s8(svld1rq_s8(svptrue_b8(), x1));
  first = svreinterpret_s8_s64(svtrn1_s64(r0, r1));
  second = svreinterpret_s8_s64(svtrn2_s64(r0, r1));
}

// SMMLA's right operand H (0: zip1, 1: zip2) of a weight vector's k..k+3 (lo) and k+4..k+7 (hi).
template <int H>
inline svint8_t channel_pairs(svint8_t lo, svint8_t hi) {
  const svint32_t l = svreinterpret_s32_s8(lo), h = svreinterpret_s32_s8(hi);
  return svreinterpret_s8_s32(H == 0 ? svzip1_s32(l, h) : svzip2_s32(l, h));
}

// Rows r0 (first) and r1 (second) of a row pair's sums over zip1 (z0) and zip2 (z1), channels in
// order in the vector's lanes (Zips 1: pass z0 twice).
inline svint32_t first_row(svint32_t z0, svint32_t z1) {
  return svreinterpret_s32_s64(svuzp1_s64(svreinterpret_s64_s32(z0), svreinterpret_s64_s32(z1)));
}
inline svint32_t second_row(svint32_t z0, svint32_t z1) {
  return svreinterpret_s32_s64(svuzp2_s64(svreinterpret_s64_s32(z0), svreinterpret_s64_s32(z1)));
}

}  // namespace
}  // namespace kt::sve
