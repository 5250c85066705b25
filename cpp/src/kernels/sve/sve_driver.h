// SVE drivers shared by the sve kernel files (gemm_<fmt>_sve.cpp). Everything here has internal
// linkage, as in the x86 drivers: each kernel TU is compiled with its own ISA flags, and a shared
// inline symbol could be resolved to a copy that uses instructions the host lacks.
//
// The vector length is read at run time: svcntw() 32-bit lanes, 4 (128 bits) to 64 (2048 bits).
// A panel of 16 channels (64 bytes of fp32 or int32) is VPP vectors:
//   VL 128: VPP = 4    VL 256: VPP = 2    VL 512: VPP = 1
//   VL > 512: VPP = 1, a vector of which the predicate panel_b32/panel_b8 keeps the first 16 lanes
// SVE types are sizeless (no arrays, no members), so each call dispatches once on VPP to template
// instantiations whose accumulators are named locals (KT_SVE_BANK), picked by compile-time index.
//
// A Tile policy computes the fp32 dot products of MR rows x 16 channels for NM matrices (2: gate
// and up, 1: down) over the whole padded K and stores them to y:
//   template <int VPP, int NM, int MR>
//   static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
//                       float (&y)[NM][MR][kPanelN]);
//   static constexpr int max_rows(int vpp, int nm): its row block at prefill
// The drivers walk panels, then rows in blocks of at most MR (kernels/row_blocks.h), and run the
// epilogue right after each block, from y (64 bytes a row and matrix, in L1) in vectors of any
// length: h = gated(g, u) for gate/up, out += weight * y for down.
#pragma once
#include <arm_sve.h>

#include <cstdint>
#include <utility>

#include "kernels/row_blocks.h"
#include "kt/kernels.h"

namespace kt::sve {
namespace {

// Vectors of 32-bit lanes per panel of 16 channels: 4, 2 or 1.
inline int vectors_per_panel() {
  const int lanes = int(svcntw());
  return lanes < kPanelN ? kPanelN / lanes : 1;
}

// The lanes of one of a panel's VPP vectors: all of them up to 512 bits, the first 16 above, so
// that loads stop at the panel's 64 bytes (a row's last block may end its buffer).
template <int VPP>
inline svbool_t panel_b32() { return svwhilelt_b32(0, kPanelN / VPP); }
template <int VPP>
inline svbool_t panel_b8() { return svwhilelt_b8(0, 4 * kPanelN / VPP); }

// A compile-time index: unroll passes Ix<0> .. Ix<N-1> to its body, whose loops over matrices,
// rows and vectors then resolve to named registers. Our own type, not std::integral_constant,
// so that nothing in a kernel object has vague (weak) linkage.
template <int I>
struct Ix {
  static constexpr int value = I;
  constexpr operator int() const { return I; }
};

template <int N, class F>
[[gnu::always_inline]] inline void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(Ix<I>{}), ...); }(std::make_integer_sequence<int, N>{});
}

template <int I, class V, class... Vs>
[[gnu::always_inline]] inline V& pick(V& v, Vs&... vs) {
  if constexpr (I == 0) return v;
  else return pick<I - 1>(vs...);
}

// Up to kBank vectors of type V in named locals name0 .. name23, and `name(Ix<i>{})` the i-th:
// the arrays SVE types cannot have. The compiler keeps in registers those a kernel uses and
// drops the rest.
constexpr int kBank = 24;
#define KT_SVE_BANK(V, name, init)                                                                        \
  V name##0 = (init), name##1 = name##0, name##2 = name##0, name##3 = name##0, name##4 = name##0,       \
    name##5 = name##0, name##6 = name##0, name##7 = name##0, name##8 = name##0, name##9 = name##0,      \
    name##10 = name##0, name##11 = name##0, name##12 = name##0, name##13 = name##0, name##14 = name##0, \
    name##15 = name##0, name##16 = name##0, name##17 = name##0, name##18 = name##0, name##19 = name##0, \
    name##20 = name##0, name##21 = name##0, name##22 = name##0, name##23 = name##0;                     \
  auto name = [&]<int I>(::kt::sve::Ix<I>) -> V& {                                                       \
    static_assert(I < ::kt::sve::kBank, "KT_SVE_BANK holds 24 vectors");                                 \
    return ::kt::sve::pick<I>(name##0, name##1, name##2, name##3, name##4, name##5, name##6, name##7,     \
                              name##8, name##9, name##10, name##11, name##12, name##13, name##14,         \
                              name##15, name##16, name##17, name##18, name##19, name##20, name##21,       \
                              name##22, name##23);                                                        \
  }

// exp(x) = 2^n * e^r, n = round(x / ln2), |r| <= ln2/2; Taylor to degree 7 (rel. error < 1e-8
// before fp32 rounding). FMAX/FMIN (not FMAXNM) return NaN for a NaN x, and so does the rest.
// +inf above ln(FLT_MAX), as std::exp (avx512_driver.h's exp_ps says why).
inline svfloat32_t exp_f32(svbool_t pg, svfloat32_t x) {
  const svbool_t overflow = svcmpgt_n_f32(pg, x, kExpOverflow);
  x = svmin_n_f32_x(pg, svmax_n_f32_x(pg, x, -87.3f), 88.7f);
  const svfloat32_t n = svrintn_f32_x(pg, svmul_n_f32_x(pg, x, 1.44269504089f));
  svfloat32_t r = svmls_n_f32_x(pg, x, n, 0.693145751953125f);  // r = x - n ln2 (ln2 in two parts)
  r = svmls_n_f32_x(pg, r, n, 1.428606765330187e-06f);
  svfloat32_t p = svdup_n_f32(1.f / 5040.f);
  p = svmad_n_f32_x(pg, p, r, 1.f / 720.f);  // p = p r + c
  p = svmad_n_f32_x(pg, p, r, 1.f / 120.f);
  p = svmad_n_f32_x(pg, p, r, 1.f / 24.f);
  p = svmad_n_f32_x(pg, p, r, 1.f / 6.f);
  p = svmad_n_f32_x(pg, p, r, 0.5f);
  p = svmad_n_f32_x(pg, p, r, 1.f);
  p = svmad_n_f32_x(pg, p, r, 1.f);
  return svsel_f32(overflow, svdup_n_f32(__builtin_inff()), svscale_f32_x(pg, p, svcvt_s32_f32_x(pg, n)));
}

// silu(g) * u = g * u / (1 + exp(-g))
inline svfloat32_t silu_mul(svbool_t pg, svfloat32_t g, svfloat32_t u) {
  const svfloat32_t den = svadd_n_f32_x(pg, exp_f32(pg, svneg_f32_x(pg, g)), 1.f);
  return svdiv_f32_x(pg, svmul_f32_x(pg, g, u), den);
}

// The stage-1 epilogue of the channels n .. (lanes of pg): silu(g) * u, or as glu says
// (GluParams), as ref_driver.h's gated: the clamps are its comparisons, which leave a NaN g or u
// (and everything for a NaN limit) as it is.
inline svfloat32_t gated(svbool_t pg, svfloat32_t g, svfloat32_t u, const GluParams* glu, int n) {
  if (!glu) return silu_mul(pg, g, u);
  if (glu->gate_bias) g = svadd_f32_x(pg, g, svld1_f32(pg, glu->gate_bias + n));
  if (glu->up_bias) u = svadd_f32_x(pg, u, svld1_f32(pg, glu->up_bias + n));
  const svfloat32_t lim = svdup_n_f32(glu->limit), neg_lim = svdup_n_f32(-glu->limit);
  g = svsel_f32(svcmpgt_f32(pg, g, lim), lim, g);  // g > lim ? lim : g
  u = svsel_f32(svcmpgt_f32(pg, u, lim), lim, svsel_f32(svcmplt_f32(pg, u, neg_lim), neg_lim, u));
  if (glu->alpha == 0.f) return silu_mul(pg, g, u);
  // g sigmoid(alpha g) (u + 1) = g (u + 1) / (1 + exp(-alpha g))
  const svfloat32_t den = svadd_n_f32_x(pg, exp_f32(pg, svmul_n_f32_x(pg, g, -glu->alpha)), 1.f);
  return svdiv_f32_x(pg, svmul_f32_x(pg, g, svadd_n_f32_x(pg, u, 1.f)), den);
}

template <class Tile, int VPP, int MR>
inline void gateup_block(const GateUpArgs& a, const uint8_t* const* w, int p, int i0) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a.rows ? a.rows[i0 + r] : i0 + r;
  alignas(64) float y[2][MR][kPanelN];
  Tile::template compute<VPP, 2, MR>(w, a.act.Kp, a.act, rows, y);
  const int n0 = p * kPanelN;
  for (int r = 0; r < MR; ++r) {
    float* h = a.h + a.ldh * (i0 + r) + n0;
    // h = gated(g, u)   16 channels, in vectors of svcntw() lanes
    for (int c = 0; c < kPanelN; c += int(svcntw())) {
      const svbool_t pg = svwhilelt_b32(c, kPanelN);
      svst1_f32(pg, h + c, gated(pg, svld1_f32(pg, y[0][r] + c), svld1_f32(pg, y[1][r] + c), a.glu, n0 + c));
    }
  }
}

// one block of exactly n <= R rows starting at row i
template <class Tile, int VPP, int R>
inline void gateup_rows(const GateUpArgs& a, const uint8_t* const* w, int p, int i, int n) {
  if constexpr (R > 0) {
    if (n == R) gateup_block<Tile, VPP, R>(a, w, p, i);
    else gateup_rows<Tile, VPP, R - 1>(a, w, p, i, n);
  }
}

template <class Tile, int VPP>
void gateup_vpp(const GateUpArgs& a) {
  constexpr int MR = Tile::max_rows(VPP, 2);
  const int blocks = (a.m + MR - 1) / MR;
  const size_t pb = a.gate->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w[2] = {a.gate->data + pb * p, a.up->data + pb * p};
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      gateup_rows<Tile, VPP, MR>(a, w, p, i, n);
    }
  }
}

template <class Tile>
void gateup(const GateUpArgs& a) {
  switch (vectors_per_panel()) {
    case 4: return gateup_vpp<Tile, 4>(a);
    case 2: return gateup_vpp<Tile, 2>(a);
    default: return gateup_vpp<Tile, 1>(a);
  }
}

// One panel per K pass at down: with SDOT/FMLA by lane, each activation load already feeds 4 (or
// more) dot products per vector, the reason the x86 drivers compute 2 down panels at once.
template <class Tile, int VPP, int MR>
inline void down_block(const DownArgs& a, const uint8_t* w, int p, int i0) {
  int rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = i0 + r;
  alignas(64) float y[1][MR][kPanelN];
  Tile::template compute<VPP, 1, MR>(&w, a.act.Kp, a.act, rows, y);
  for (int r = 0; r < MR; ++r) {
    float* o = a.out + a.ldo * a.tok[i0 + r] + p * kPanelN;
    const float weight = a.weight[i0 + r];
    // out += weight * y
    for (int c = 0; c < kPanelN; c += int(svcntw())) {
      const svbool_t pg = svwhilelt_b32(c, kPanelN);
      svst1_f32(pg, o + c, svmla_n_f32_x(pg, svld1_f32(pg, o + c), svld1_f32(pg, y[0][r] + c), weight));
    }
  }
}

template <class Tile, int VPP, int R>
inline void down_rows(const DownArgs& a, const uint8_t* w, int p, int i, int n) {
  if constexpr (R > 0) {
    if (n == R) down_block<Tile, VPP, R>(a, w, p, i);
    else down_rows<Tile, VPP, R - 1>(a, w, p, i, n);
  }
}

template <class Tile, int VPP>
void down_vpp(const DownArgs& a) {
  constexpr int MR = Tile::max_rows(VPP, 1);
  const int blocks = (a.m + MR - 1) / MR;
  const size_t pb = a.down->panel_bytes;
  for (int p = a.p0; p < a.p1; ++p) {
    const uint8_t* w = a.down->data + pb * p;
    for (int b = 0; b < blocks; ++b) {
      const int i = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i;
      down_rows<Tile, VPP, MR>(a, w, p, i, n);
    }
  }
}

template <class Tile>
void down(const DownArgs& a) {
  switch (vectors_per_panel()) {
    case 4: return down_vpp<Tile, 4>(a);
    case 2: return down_vpp<Tile, 2>(a);
    default: return down_vpp<Tile, 1>(a);
  }
}

}  // namespace
}  // namespace kt::sve
