// The AVX2 driver of the GGUF block kernels (AVX2 + FMA + F16C), shared by the gemm_<type>_avx2.cpp
// files; a block type brings only its decoder (a BlockCodec, below).
//
// [NOTE] The weights stay in the file's blocks, so the bytes of a ymm are consecutive k of one
// channel (not channels side by side, as in the int4_g32 / int8_pc layouts).
// 256-weight blocks (compute): for every k-block s, matrix t and panel half (8 channels) the driver
//   1. decodes each channel's block ONCE: kChunks ymm of 32 int8 weights each (in registers) and
//      the per-sub-block int16 scales (in an L1 scratch, Codec::Aux; in registers for one row),
//   2. runs all the block's rows against it: per 32 weights one pmaddubsw (u8 weight x s8
//      activation; signed weights move their sign onto the activation, vpsignb) and one pmaddwd
//      with the sub-block scales, summed in int32 lanes: a vector of 8 partial sums per
//      (row, channel), stored to an L1 scratch; then
//   3. per row, sums the 8 channels' lanes in one hadd tree (sum_channels) into a vector of 8
//      channel sums, and adds it, scaled in fp32 by the block's fp16 d of each channel times the
//      activation's d, to the row's accumulator (Codec::accumulate: mins, offsets).
// 32-weight blocks (compute32): a channel's 8 consecutive blocks are decoded together and the tree
// sums each block's lanes instead, so that each fp32 lane carries one block's scale (see there).
// Every integer sum is the reference's (formats/<type>.cpp dot_block); the fp32 epilogue differs
// from the reference by rounding only (an FMA, the lanes summed in integers, blocks in a tree).
// A block's decode costs tens of instructions against 3 per 32 weights and row: the driver takes
// up to kGgufRows rows per decode (prefill), and at decode (m = 1..8) it reads every weight byte
// once, the panel streamed kStreamAhead ahead (kernels/next_panels.h). pmaddubsw pairs stay below
// 2^15: every codec's unsigned weights are at most 128 with |activation| <= 127 (q8_32 / q8_256
// round amax to 127).
// Prefill of q4_K and q5_K (Codec::kTransposable, from kTransposeRows rows) transposes the decoded
// blocks of 8 channels in L1 into channels side by side, as the int4_g32 tile: kStepsPerSum
// pmaddubsw summed in int16 before one pmaddwd, each weight load shared by 4 rows; at shape A and
// 512 tokens this took q4_K from about 400 to 300 ms of one core.
// Left to do: the other types' prefill runs 2 multiplies (pmaddubsw, pmaddwd) per 32 weights and
// row: the 16-weight sub-blocks (q2_K, q3_K, q6_K) could take the transposed path with two scales
// per chunk; iq4_xs and q8_0, whose signed pairs fill int16, gain less.
//
// The panel, GgufPanelBlock<Block> per k-block (formats/gguf_format.h):
//   | b[0..7] (half 0) b[8..15] (half 1) of k-block 0 | ... of k-block 1 | ... |
//
// A BlockCodec C:
//   using Block, Act;              the block type and its activation block (ActQ8x32 / ActQ8x256)
//   kChunks                        ymm of weights per block (kK / 32)
//   kMins                          (256) whether dot's msum is used
//   kOffset, kPlusMin              (32) weights d * (q - kOffset), or d * q + m
//   struct Aux                     what the row dot reads besides the weights (in L1)
//   decode(b, w, aux)              the block's weights, unsigned (or |w| for signed ones), its Aux
//   dot(w, aux, act, isum, msum)   one row: the int32 lane sums (isum) and, where the block has
//                                  mins, the lane sums of mins x activation sums (msum)
//   scales(b, d, m)                the fp16 bits of the block's scale and min (m: 0 when none)
//   scales_ps(d)                   (optional, 32) the fp32 scales of 8 blocks from what scales() gave
//                                  as d, where that is not fp16 bits (mxfp4: the ue8m0 exponent)
//   accumulate(acc, v, mv, D, M, act)  (256) acc + the block's fp32 contribution of 8 channels:
//                                  v, mv the channel sums of isum, msum; D, M their fp32 d, dmin
#pragma once
#include <immintrin.h>

#include "kernels/avx2/avx2_driver.h"
#include "kt/gguf_blocks.h"

namespace kt::avx2 {
namespace {

// Rows per block decode: the activations of a k-block (16 x 320 bytes of q8_256) and the lane sums
// (16 x 8 x 32 bytes, twice with mins) stay in L1 beside the decoded block.
constexpr int kGgufRows = 16;

// The 8 channel sums of 8 vectors of int32 lane sums: [sum v[0], ..., sum v[7]].
inline __m256i sum_channels(const __m256i* v) {
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  // a = [v0..v3 summed over lanes 0-3 | v0..v3 over lanes 4-7], b the same for v4..v7
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

// sum_channels in fp32: [sum of the lanes of v[0], ..., of v[7]]
inline __m256 sum_channels_ps(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// p as an opaque register: loads through it stay inside the loop that reads them (GCC would
// otherwise hoist a decoded block's scales out of the row loop into registers the weights need).
template <class T>
inline const T* opaque(const T* p) {
  __asm__("" : "+r"(p));
  return p;
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// The fp16 fields of 8 blocks (fp16 bits) as fp32. Built in registers: a 16-byte load of the 8
// values just stored as 2-byte halves would wait for store forwarding to fail, once per 8 blocks.
inline __m256 f16x8(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_setr_epi16(short(h[0]), short(h[1]), short(h[2]), short(h[3]), short(h[4]), short(h[5]),
                                        short(h[6]), short(h[7])));
}

// pf.touch(t, l) for the steps l in [l0, l1), its multiply strength-reduced
inline void touch_lines(const NextPanels& pf, int t, int l0, int l1) {
  const uint8_t* base = pf.at[t];
  if (!base) return;
  size_t off = size_t(l0) * pf.step;
  for (int l = l0; l < l1; ++l, off += pf.step) _mm_prefetch(reinterpret_cast<const char*>(base + (off >> 16)), _MM_HINT_T1);
}

// The 8 x 8 dword transpose: out[g] dword c = in[c] dword g.
inline void transpose8(const __m256i* in, __m256i* out) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    out[g] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x20);
    out[g + 4] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x31);
  }
}

// 8 int16 in 0..32767 as 8 int32 lanes holding the value twice (a pmaddwd pair)
inline __m256i pairs16(__m128i v) {
  const __m256i e = _mm256_cvtepu16_epi32(v);
  return _mm256_or_si256(e, _mm256_slli_epi32(e, 16));
}

// The fp32 scales of 8 blocks: their fp16 bits, or the codec's own encoding (Codec::scales_ps).
template <class Codec>
inline __m256 block_scales(const uint16_t* d16) {
  if constexpr (requires { Codec::scales_ps(d16); }) return Codec::scales_ps(d16);
  else return f16x8(d16);
}

template <class Codec>
struct GgufKernel {
  using Block = typename Codec::Block;
  using Act = typename Codec::Act;
  using PB = GgufPanelBlock<Block>;
  static constexpr int kChunks = Codec::kChunks;
  static constexpr int kPanelBytes = int(sizeof(PB));

  // n <= kGgufRows rows x[r] (activation rows), NM matrices w[t] (panels): acc[t][r][h] the fp32
  // dot products of row r with channels 8h .. 8h + 7 of matrix t.
  template <int NM>
  static void compute(const uint8_t* const* w, int Kp, const Act* const* x, int n, const NextPanels& pf,
                      __m256 (&acc)[NM][kGgufRows][2]) {
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < n; ++r) acc[t][r][0] = acc[t][r][1] = _mm256_setzero_ps();
    alignas(32) __m256i isum[kGgufRows][kHalfN], msum[kGgufRows][kHalfN];
    alignas(32) typename Codec::Aux aux;
    for (int s = 0; s < Kp / Block::kK; ++s) {
      for (int t = 0; t < NM; ++t) {
        const PB& pb = reinterpret_cast<const PB*>(w[t])[s];
        touch_lines(pf, t, s * kPanelBytes / 64, ((s + 1) * kPanelBytes + 63) / 64);
        for (int h = 0; h < 2; ++h) {
          if constexpr (requires { Codec::kTransposable; }) {
            if (n >= kTransposeRows) {
              half_transposed(pb, h, x, s, n, acc[t]);
              continue;
            }
          }
          alignas(16) uint16_t d16[kHalfN], m16[kHalfN];
          for (int c = 0; c < kHalfN; ++c) {
            const Block& b = pb.b[h * kHalfN + c];
            Codec::scales(b, d16[c], m16[c]);
            __m256i q[kChunks];
            if (n == 1) {  // decode: the block's Aux may stay in registers
              typename Codec::Aux aux1;
              Codec::decode(b, q, aux1);
              Codec::dot(q, aux1, x[0][s], isum[0][c], msum[0][c]);
            } else {
              Codec::decode(b, q, aux);
              for (int r = 0; r < n; ++r) Codec::dot(q, *opaque(&aux), x[r][s], isum[r][c], msum[r][c]);
            }
          }
          const __m256 D = f16x8(d16), M = f16x8(m16);
          for (int r = 0; r < n; ++r) {
            __m256i mv = _mm256_setzero_si256();
            if constexpr (Codec::kMins) mv = sum_channels(msum[r]);
            acc[t][r][h] = Codec::accumulate(acc[t][r][h], sum_channels(isum[r]), mv, D, M, x[r][s]);
          }
        }
      }
    }
  }

  // Prefill of a codec with kTransposable (kStepsPerSum pmaddubsw sum in int16; 32-weight
  // sub-blocks, mins paired with bsums as q4_K's): the 8 channels' decoded blocks transposed in L1
  // so that a ymm holds 4 k of each channel (wt[j][g]: k = 32 j + 4 g ..), as the int4_g32 tile;
  // per row and sub-block, 8 pmaddubsw against broadcast activations summed in int16 by kSteps and
  // one pmaddwd per sum with the channels' scales, each weight load shared by up to 4 rows, and no
  // channel tree.
  static constexpr int kTransposeRows = 4;

  static constexpr int steps_per_sum() {
    if constexpr (requires { Codec::kStepsPerSum; }) return Codec::kStepsPerSum;
    else return 1;
  }
  static constexpr int kSteps = steps_per_sum();  // pmaddubsw per int16 sum in the transposed path

  template <int R>
  static void rows_transposed(const __m256i (&wt)[8][8], const __m256i (&scp)[8], const __m256i (&mp)[8],
                              const Act* const* x, int s, __m256 D, __m256 M, __m256 (*acc)[2], int h) {
    __m256i isum[R];
    for (int i = 0; i < R; ++i) isum[i] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      __m256i s16[R] = {};
      for (int g = 0; g < 8; ++g) {
        const __m256i w = _mm256_load_si256(&wt[j][g]);
        for (int i = 0; i < R; ++i) {
          const __m256i p = _mm256_maddubs_epi16(w, bcast32(x[i][s].q + 32 * j + 4 * g));
          s16[i] = g % kSteps == 0 ? p : _mm256_add_epi16(s16[i], p);
        }
        if ((g + 1) % kSteps == 0)
          for (int i = 0; i < R; ++i) isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(s16[i], scp[j]));
      }
    }
    for (int i = 0; i < R; ++i) {
      __m256i msum = _mm256_madd_epi16(bcast32(x[i][s].bsums), mp[0]);
      for (int j = 1; j < 8; ++j) msum = _mm256_add_epi32(msum, _mm256_madd_epi16(bcast32(x[i][s].bsums + 2 * j), mp[j]));
      acc[i][h] = Codec::accumulate(acc[i][h], isum[i], msum, D, M, x[i][s]);
    }
  }

  static void half_transposed(const PB& pb, int h, const Act* const* x, int s, int n, __m256 (&acc)[kGgufRows][2]) {
    alignas(32) __m256i wq[8][kHalfN], wt[8][8], sv[kHalfN], mv[kHalfN], scp[8], mp[8];
    alignas(16) uint16_t d16[kHalfN], m16[kHalfN];
    for (int c = 0; c < kHalfN; ++c) {
      const Block& b = pb.b[h * kHalfN + c];
      Codec::scales(b, d16[c], m16[c]);
      __m256i q[8];
      __m128i sc, mn;
      Codec::decode_t(b, q, sc, mn);
      for (int j = 0; j < 8; ++j) wq[j][c] = q[j];
      sv[c] = pairs16(sc), mv[c] = pairs16(mn);
    }
    for (int j = 0; j < 8; ++j) transpose8(wq[j], wt[j]);
    transpose8(sv, scp);
    transpose8(mv, mp);
    const __m256 D = f16x8(d16), M = f16x8(m16);
    int r = 0;
    for (; r + 4 <= n; r += 4) rows_transposed<4>(wt, scp, mp, x + r, s, D, M, acc + r, h);
    if (n - r == 3) rows_transposed<3>(wt, scp, mp, x + r, s, D, M, acc + r, h);
    else if (n - r == 2) rows_transposed<2>(wt, scp, mp, x + r, s, D, M, acc + r, h);
    else if (n - r == 1) rows_transposed<1>(wt, scp, mp, x + r, s, D, M, acc + r, h);
  }

  // The 32-weight blocks (kChunks = 1): per channel, a group of kGroup k-blocks decoded together,
  // and per row the group's int32 lane sums reduced across the blocks (sum_channels over blocks, not
  // channels) into one vector of kGroup block sums, scaled per lane by that block's d * a.d
  // (offsets and mins as Codec::kOffset, kPlusMin); the 8 channels' vectors of a half then take
  // one fp32 tree per row and group. One tree per 256 weights rather than per 32.
  static constexpr int kGroup = 8;

  // The activation sums enter as kSumFactor * a.sum: the offset's product, or the sum for the min.
  static constexpr int kSumFactor = Codec::kOffset != 0 ? Codec::kOffset : 1;

  // fp32 per block of a group: (v - offset * sum) * d * a.d (+ m * a.d * sum); as = kSumFactor * sum
  static __m256 block_values(__m256i v, __m256 D, __m256 M, const float* ad, const int32_t* as) {
    const __m256 AD = _mm256_load_ps(ad);
    const __m256i AS = _mm256_load_si256(reinterpret_cast<const __m256i*>(as));
    if constexpr (Codec::kOffset != 0) v = _mm256_sub_epi32(v, AS);
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(D, AD));
    if constexpr (Codec::kPlusMin) f = _mm256_fmadd_ps(M, _mm256_mul_ps(AD, _mm256_cvtepi32_ps(AS)), f);
    return f;
  }

  // The group of k-blocks s0 .. s0 + GN - 1 (GN <= kGroup) of NM matrices added to acc; the lanes
  // of blocks past GN hold zero weights (against block s0's activations) and zero scales.
  template <int GN, int NM>
  static void group32(const uint8_t* const* w, int s0, const Act* const* x, int n, const NextPanels& pf,
                      __m256 (&acc)[NM][kGgufRows][2]) {
    alignas(32) float ad[kGgufRows][kGroup];
    alignas(32) int32_t as[kGgufRows][kGroup];
    alignas(32) __m256 fv[kGgufRows][kHalfN];
    alignas(32) typename Codec::Aux aux[kGroup];
    for (int r = 0; r < n; ++r)
      for (int i = 0; i < kGroup; ++i) ad[r][i] = i < GN ? x[r][s0 + i].d : 0.f, as[r][i] = i < GN ? kSumFactor * x[r][s0 + i].sum : 0;
    for (int t = 0; t < NM; ++t) {
      const PB* pb = reinterpret_cast<const PB*>(w[t]) + s0;
      touch_lines(pf, t, s0 * kPanelBytes / 64, ((s0 + GN) * kPanelBytes + 63) / 64);
      for (int h = 0; h < 2; ++h) {
        for (int c = 0; c < kHalfN; ++c) {
          alignas(16) uint16_t d16[kGroup], m16[kGroup];
          if (n == 1) {  // decode: each block decoded into registers and used at once
            __m256i isum[kGroup], unused;
            for (int i = 0; i < kGroup; ++i) {
              if (i < GN) {
                const Block& b = pb[i].b[h * kHalfN + c];
                Codec::scales(b, d16[i], m16[i]);
                __m256i q[1];
                typename Codec::Aux a1;
                Codec::decode(b, q, a1);
                Codec::dot(q, a1, x[0][s0 + i], isum[i], unused);
              } else {
                d16[i] = m16[i] = 0, isum[i] = _mm256_setzero_si256();
              }
            }
            fv[0][c] = block_values(sum_channels(isum), block_scales<Codec>(d16), f16x8(m16), ad[0], as[0]);
            continue;
          }
          __m256i q[kGroup][1];
          for (int i = 0; i < kGroup; ++i) {
            if (i < GN) {
              const Block& b = pb[i].b[h * kHalfN + c];
              Codec::scales(b, d16[i], m16[i]);
              Codec::decode(b, q[i], aux[i]);
            } else {
              d16[i] = m16[i] = 0, q[i][0] = _mm256_setzero_si256();
            }
          }
          const __m256 D = block_scales<Codec>(d16), M = f16x8(m16);
          for (int r = 0; r < n; ++r) {
            const Act* xr = x[r] + s0;
            __m256i isum[kGroup], unused;
            for (int i = 0; i < kGroup; ++i) Codec::dot(q[i], *opaque(&aux[i]), xr[i < GN ? i : 0], isum[i], unused);
            fv[r][c] = block_values(sum_channels(isum), D, M, ad[r], as[r]);
          }
        }
        for (int r = 0; r < n; ++r) acc[t][r][h] = _mm256_add_ps(acc[t][r][h], sum_channels_ps(fv[r]));
      }
    }
  }

  template <int NM, int GN = kGroup>
  static void tail32(const uint8_t* const* w, int s0, int gn, const Act* const* x, int n, const NextPanels& pf,
                     __m256 (&acc)[NM][kGgufRows][2]) {
    if constexpr (GN > 0) {
      if (gn == GN) group32<GN, NM>(w, s0, x, n, pf, acc);
      else tail32<NM, GN - 1>(w, s0, gn, x, n, pf, acc);
    }
  }

  template <int NM>
  static void compute32(const uint8_t* const* w, int Kp, const Act* const* x, int n, const NextPanels& pf,
                        __m256 (&acc)[NM][kGgufRows][2]) {
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < n; ++r) acc[t][r][0] = acc[t][r][1] = _mm256_setzero_ps();
    const int nb = Kp / Block::kK;
    int s0 = 0;
    for (; s0 + kGroup <= nb; s0 += kGroup) group32<kGroup, NM>(w, s0, x, n, pf, acc);
    if (s0 < nb) tail32<NM>(w, s0, nb - s0, x, n, pf, acc);
  }

  static const Act* act_row(const ActView& act, int row) {
    return reinterpret_cast<const Act*>(act.data + act.stride * row);
  }

  static void gateup(const GateUpArgs& a) {
    const int blocks = (a.m + kGgufRows - 1) / kGgufRows;
    const size_t pb = a.gate->panel_bytes;
    for (int p = a.p0; p < a.p1; ++p) {
      const uint8_t* w[2] = {a.gate->data + pb * p, a.up->data + pb * p};
      const uint8_t* next[2] = {nullptr, nullptr};
      if (p + 1 < a.p1) next[0] = w[0] + pb, next[1] = w[1] + pb;
      for (int b = 0; b < blocks; ++b) {
        const int i0 = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i0;
        const Act* x[kGgufRows];
        for (int r = 0; r < n; ++r) x[r] = act_row(a.act, a.rows ? a.rows[i0 + r] : i0 + r);
        __m256 acc[2][kGgufRows][2];
        if constexpr (kChunks == 1) compute32<2>(w, a.act.Kp, x, n, PassPrefetch{w, next, pb, blocks, b}.at(2, 0), acc);
        else compute<2>(w, a.act.Kp, x, n, PassPrefetch{w, next, pb, blocks, b}.at(2, 0), acc);
        // h = silu(g) * u
        for (int r = 0; r < n; ++r)
          for (int h = 0; h < 2; ++h)
            _mm256_storeu_ps(a.h + a.ldh * (i0 + r) + p * kPanelN + h * kHalfN,
                             gated(acc[0][r][h], acc[1][r][h], a.glu, p * kPanelN + h * kHalfN));
      }
    }
  }

  static void down(const DownArgs& a) {
    const int blocks = (a.m + kGgufRows - 1) / kGgufRows;
    const size_t pb = a.down->panel_bytes;
    for (int p = a.p0; p < a.p1; ++p) {
      const uint8_t* w[1] = {a.down->data + pb * p};
      // the next panel, else (this call's last) the next matrix's first one
      const uint8_t* next[1] = {p + 1 < a.p1 ? w[0] + pb : a.next ? a.next + pb * a.p0 : nullptr};
      for (int b = 0; b < blocks; ++b) {
        const int i0 = block_start(a.m, blocks, b), n = block_start(a.m, blocks, b + 1) - i0;
        const Act* x[kGgufRows];
        for (int r = 0; r < n; ++r) x[r] = act_row(a.act, i0 + r);
        __m256 acc[1][kGgufRows][2];
        if constexpr (kChunks == 1) compute32<1>(w, a.act.Kp, x, n, PassPrefetch{w, next, pb, blocks, b}.at(1, 0), acc);
        else compute<1>(w, a.act.Kp, x, n, PassPrefetch{w, next, pb, blocks, b}.at(1, 0), acc);
        // out[tok] += weight * y
        for (int r = 0; r < n; ++r) {
          const __m256 weight = _mm256_set1_ps(a.weight[i0 + r]);
          for (int h = 0; h < 2; ++h) {
            float* o = a.out + a.ldo * a.tok[i0 + r] + p * kPanelN + h * kHalfN;
            _mm256_storeu_ps(o, _mm256_fmadd_ps(weight, acc[0][r][h], _mm256_loadu_ps(o)));
          }
        }
      }
    }
  }
};

// ---- pieces the codecs share ----

// pmaddubsw of signed weights w (|w| <= 128) with activations a: |w| x (a with w's sign).
// wabs = |w| (a register), wsgn = w (in L1).
inline __m256i dot_signed(__m256i wabs, const void* wsgn, const void* a) {
  return _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(load256(a), load256(wsgn)));
}

// 32 nibbles of 16 bytes: [low nibbles | high nibbles] (the first 16 weights of a 32-weight
// sub-block in the low nibbles, the last 16 in the high ones: q4_0, iq4_nl, iq4_xs).
inline __m256i nibbles16(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// fp32 contribution of a block whose weights are d * q: acc + v * (D * a.d)
inline __m256 scaled(__m256 acc, __m256i v, __m256 D, float ad) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(D, _mm256_set1_ps(ad)), acc);
}

// acc + v * D * a.d - mv * M * a.d: a K-quant block with mins (d * sc * q - dmin * m)
inline __m256 scaled_min(__m256 acc, __m256i v, __m256i mv, __m256 D, __m256 M, float ad) {
  const __m256 s = _mm256_set1_ps(ad);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(D, s), acc);
  return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mv), _mm256_mul_ps(M, s), acc);
}

// The int16 scale vectors of 8 sub-blocks of 32 (one per chunk): out[j] = sc[j] in every lane;
// sc: 8 int16.
inline void scales_per_32(__m128i sc, __m256i* out) {
  const __m256i s = _mm256_broadcastsi128_si256(sc);
  for (int j = 0; j < 8; ++j) out[j] = _mm256_shuffle_epi8(s, _mm256_set1_epi16(short(0x0100 + 0x0202 * j)));
}

// The int16 scale vectors of 16 sub-blocks of 16: chunk j covers sub-blocks 2j (lanes 0-7, the
// first 16 weights) and 2j + 1 (lanes 8-15); sc: 16 int16.
inline void scales_per_16(__m256i sc, __m256i* out) {
  const __m256i lo = _mm256_permute2x128_si256(sc, sc, 0x00), hi = _mm256_permute2x128_si256(sc, sc, 0x11);
  for (int j = 0; j < 8; ++j) {
    const int i = j % 4;  // the pair's word index within its 8
    const __m256i ctrl = _mm256_set_m128i(_mm_set1_epi16(short(0x0302 + 0x0404 * i)), _mm_set1_epi16(short(0x0100 + 0x0404 * i)));
    out[j] = _mm256_shuffle_epi8(j < 4 ? lo : hi, ctrl);
  }
}

// The 6-bit scales and mins of q4_K / q5_K (q4K_scale_min in kt/gguf_blocks.h), 8 of each:
// sc as 8 int16, mins as 16 int16 with each min twice (lanes 2j, 2j + 1 pair with bsums[2j],
// bsums[2j + 1] in pmaddwd).
inline void q4K_scales(const uint8_t* s, __m128i& sc, __m256i& mins, __m128i* m8 = nullptr) {
  uint32_t u[3];
  __builtin_memcpy(u, s, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
  const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
  sc = _mm_cvtepu8_epi16(_mm_setr_epi32(int(sc_lo), int(sc_hi), 0, 0));
  const __m128i m = _mm_setr_epi32(int(m_lo), int(m_hi), 0, 0);
  mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
  if (m8) *m8 = _mm_cvtepu8_epi16(m);
}

// The 256 nibbles of q4_K / q5_K: chunk 2c the low nibbles of qs[32c .. 32c + 31], chunk 2c + 1
// the high ones.
inline void q4K_nibbles(const uint8_t* qs, __m256i (&w)[8]) {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  for (int c = 0; c < 4; ++c) {
    const __m256i q = load256(qs + 32 * c);
    w[2 * c] = _mm256_and_si256(q, nib);
    w[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);
  }
}

// sum over chunks j of pmaddwd(pmaddubsw(w[j], a[32 j ..]), sc[j]): the int32 lane sums of a
// 256-weight block with unsigned weights.
inline __m256i dot_chunks8(const __m256i (&w)[8], const __m256i* sc, const int8_t* a) {
  __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], load256(a)), sc[0]);
  for (int j = 1; j < 8; ++j)
    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(w[j], load256(a + 32 * j)), sc[j]));
  return s;
}

// As dot_chunks8, for signed weights: wabs = |w| (registers), wsgn = w (in L1).
inline __m256i dot_chunks8_signed(const __m256i (&wabs)[8], const __m256i* wsgn, const __m256i* sc, const int8_t* a) {
  __m256i s = _mm256_madd_epi16(dot_signed(wabs[0], wsgn, a), sc[0]);
  for (int j = 1; j < 8; ++j)
    s = _mm256_add_epi32(s, _mm256_madd_epi16(dot_signed(wabs[j], wsgn + j, a + 32 * j), sc[j]));
  return s;
}

// The levels of iq4_nl / iq4_xs in both 128-bit lanes, for pshufb by nibble.
inline __m256i iq4_levels() {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
}

// ---- 32-weight blocks: one chunk, q8_32 activations ----

// int32 lane sums of a 32-weight block of unsigned weights (pairs of pmaddubsw added by pmaddwd)
inline __m256i dot_chunk(__m256i w, const int8_t* a) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, load256(a)), _mm256_set1_epi16(1));
}

// The fifth bits of q5_0 / q5_1 (bit k of the little-endian uint32 at qh) as 0x10 in byte k.
inline __m256i q5_high_bits(const uint8_t* qh) {
  uint32_t h;
  __builtin_memcpy(&h, qh, 4);
  // byte k of the result takes byte k / 8 of h, then tests its bit k % 8
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(h)), spread), bit);
  return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

}  // namespace
}  // namespace kt::avx2
