// rows_check: every kernel row of the active ISA tier (KT_KERNEL_ISA forces one) against its
// format's generic row (the scalar reference kernels of cpp/src/kernels/ref), both called directly
// on the same quantized weights, each packed in its row's own layout (pack_for), and on the same
// activations, each quantized to its row's ActFormat. moe_check runs whole layers (M = 1 and 130,
// the layer's K); this driver walks the edges a layer never reaches:
//   K        1, 2 and 3 blocks past each unrolling of the K loop (k_cases), the smallest K, and
//            K padded to the block where the format allows it
//   M        1..17 (every remainder of row blocks up to 8, odd M for the row-pair tiles), 23 and
//            40; a tile row from its min_m
//   gate/up  a scattered `rows` list or none, panels [p0, p1) from 0 or not, every kind of
//            GluParams (biases, limits, alpha 0 and gpt-oss's) with NaN and inf in the biases,
//            NaN in f32 and bf16 activations, an all-zero activation row (scale 0)
//   down     scattered output tokens, ldo past the panels, `next` set or not, +-inf in f32 and
//            bf16 activations
//   both     weights packed from a slice of a larger matrix (n0, k0 > 0), activation rows
//            `stride` bytes apart and sums `gsum_stride` apart, tight or padded; output elements
//            the call must not write (other panels, rows, the ldh / ldo padding) left as they were
// The options rotate from case to case (coprime periods) rather than multiply: about a minute per
// tier in qemu. A row that reads bf16 activations where the reference reads f32 (neon_bf16,
// avx512_bf16) is compared with the reference fed the same bf16-rounded values; q8u (avx512_vnni
// int8_pc) holds the same q as the reference's q8s.
// Usage: rows_check [-v] [substring of row names]. Prints one line per row (-v: and the cases of
// its worst differences) and a summary; exits 1 on any failure, or when the active tier has no row.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kt/cpu_features.h"
#include "kt/formats.h"
#include "kt/kernels.h"

using namespace kt;

namespace {

// Agreement: NaN where and only where the reference has NaN, the same infinities, the elements
// the call must not write left bit for bit, and elsewhere |got - want| <= kRelTol * scale, the
// scale being what the sums' roundings are relative to:
//   down     Y + |want|: Y the case's largest finite increment weight * y, |want| for the
//            rounding of the final += (FMA or not)
//   gate/up  |dh/dg| G + |dh/du| U + |h| (glu_scale): G and U the case's largest finite sums g and
//            u (the reference's, ref_sums), carried into h by the epilogue's slopes at this
//            element, and |h| for the epilogue's own roundings (the vector exp, a division). A
//            clamp or a small silu(g) makes h small where g and u are not: against max|h| the
//            same ~1e-7 error of the sums measured up to 7e-6 (limit 1.5).
// Why 1e-5: both rows sum the same products of the same values. For the integer formats the dot
// product of each block or group is exact in int32, and only the fp32 arithmetic around it
// differs: the scales applied in another order, the blocks summed in another order, FMA or not.
// For bf16, f16, f32 and fp8_g128 the K fp32 products are summed in another order. Every addition
// rounds to 2^-24 of its partial sum, and the roundings are independent, so n terms drift apart
// like sqrt(n) 2^-24 of the sum's scale (the worst case, n 2^-24 sum|term|, is never approached):
// measured at most 1.4e-6 (fp8_g128, up to 1152 fp32 terms, where the reference also rounds each
// weight times its group scale), 3e-7 for the integer formats. 1e-5 leaves a margin of 7x, while
// a wrong lane, block, scale, row or channel moves an output by a whole term of its sum (the
// mutations tried: worst differences of 0.2 to 0.7).
constexpr double kRelTol = 1e-5;

// The gpt-oss epilogue: limit 7, alpha 1.702.
constexpr float kGptOssLimit = 7.f, kGptOssAlpha = 1.702f;

constexpr int kPanels = 5;                 // panels of the packed matrices; the calls take ranges of them
constexpr int kN = kPanels * kPanelN - 8;  // channels: the last panel half filled, the rest zeros

// Activation rows in one ActFormat, as the layer prepares them (moe_layer.cpp, quantize_x).
struct Acts {
  std::vector<uint8_t> data;
  std::vector<float> scale;
  std::vector<int32_t> gsum;
  ActView view;
};

// Rows of K values x (row-major) in `format`, padded to Kp; rows `stride` bytes apart and sums
// `gsum_stride` int32 apart, tight or padded by `pad`.
Acts make_acts(ActFormat format, const std::vector<float>& x, int rows, int K, int Kp, bool pad) {
  Acts a;
  const size_t stride = act_row_bytes(format, Kp) + (pad ? 64 : 0);
  const int gsum_stride = q8_gsum_stride(Kp) + (pad ? 3 : 0);
  a.data.assign(stride * rows, 0);
  a.scale.assign(rows, 0.f);
  a.gsum.assign(size_t(gsum_stride) * rows, 0);
  for (int r = 0; r < rows; ++r)
    if (!quantize_act_row(format, &x[size_t(r) * K], K, Kp, a.data.data() + stride * r, &a.scale[r],
                          a.gsum.data() + size_t(gsum_stride) * r)) {
      std::fprintf(stderr, "activation row %d is not finite\n", r);
      std::exit(2);
    }
  a.view = {.format = format, .data = a.data.data(), .stride = stride, .scale = a.scale.data(),
            .gsum = a.gsum.data(), .gsum_stride = gsum_stride, .Kp = Kp};
  return a;
}

// Writes v at (row r, k) of f32 or bf16 activations: the values quantize_act_row refuses.
void poke_act(Acts& a, int r, int k, float v) {
  uint8_t* row = a.data.data() + a.view.stride * r;
  if (a.view.format == ActFormat::f32) {
    std::memcpy(row + 4 * size_t(k), &v, 4);
  } else {
    const uint16_t b = f32_to_bf16(v);
    std::memcpy(row + 2 * size_t(k), &b, 2);
  }
}

bool float_acts(ActFormat f) { return f == ActFormat::f32 || f == ActFormat::bf16; }

// A packed [N, K] slice of q, as the layer packs its slices (moe_layer.cpp).
struct Packed {
  std::vector<uint8_t> bytes;
  PackedMatrix m;
};

Packed pack_slice(const KernelRow& row, const QuantizedMatrix& q, int n0, int n1, int k0, int k1) {
  const FormatTraits& f = format_traits(row.format);
  Packed p;
  p.m.N = n1 - n0;
  p.m.K = k1 - k0;
  p.m.Kp = round_up(p.m.K, f.k_align);
  p.m.panels = (p.m.N + kPanelN - 1) / kPanelN;
  p.m.panel_bytes = f.panel_bytes(p.m.Kp);
  p.bytes.assign(p.m.bytes(), 0);
  pack_for(row, q, n0, n1, k0, k1, p.bytes.data());
  p.m.data = p.bytes.data();
  return p;
}

// The K of the cases, in blocks of k_align k: 1, 2 and 3 blocks past an unrolling of 1, 2, 4, 8
// or 16 blocks (of 32 too where a block is at most 4 k, and one long K); for the GGUF block types
// and fp8_g128, whose kernels step one block or group at a time, past 1, 2 and 4 (and 8 for 32-k
// blocks); the smallest K; and, where K may be padded, K that end inside a block.
std::vector<int> k_cases(const FormatTraits& f) {
  const int a = f.k_align;
  std::vector<int> blocks;
  if (a >= 256) blocks = {1, 2, 3, 5};
  else if (a >= 128 || f.whole_blocks()) blocks = {1, 2, 3, 5, 6, 7, 9};
  else blocks = {1, 2, 3, 5, 6, 7, 9, 10, 11, 17, 18, 19};
  if (a <= 4) blocks.insert(blocks.end(), {33, 34, 35, 67});
  std::vector<int> ks;
  for (int b : blocks) ks.push_back(b * a);
  if (!f.whole_blocks()) {
    ks.insert(ks.begin(), 1);
    if (a > 1)
      for (int b : {2, 7, 18})
        if (b <= blocks.back()) ks.push_back(b * a - (a == 2 ? 1 : a / 2 + 1));
  }
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

const std::vector<int> kMs = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 23, 40};

// Weights spanning a wide range: Gaussian, a quarter of them scaled down by up to 2^-16, so the
// quantizers reach their small codes (fp8 subnormals, zeros, small sub-block scales).
std::vector<float> make_weights(std::mt19937& rng, int N, int K) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  std::vector<float> w(size_t(N) * K);
  for (float& v : w) v = normal(rng) * (uniform(rng) < 0.25f ? std::exp2(-16.f * uniform(rng)) : 1.f);
  return w;
}

QuantizedMatrix quantize(const FormatTraits& f, const std::vector<float>& w, int N, int K) {
  QuantizedMatrix q;
  f.quantize_ref(w.data(), N, K, &q);
  return q;
}

// Agreement of one row's results with the reference's; keeps the worst of each stage.
struct Tally {
  const char* row;
  int cases = 0, failed = 0;  // cases, and those where gate/up or down disagreed
  int reported = 0;           // FAIL lines printed
  double worst[2] = {0, 0};  // of |got - want| / scale: gate/up, down
  std::string worst_at[2] = {};  // their cases

  // got and want: the whole output buffers (rows x ld floats), `before` the call. written(r, c)
  // says which elements the call writes; all others must be left as they were, bit for bit.
  // scale(r, c): what the sums' roundings are measured against at (r, c) (see kRelTol).
  // Returns whether they agree.
  template <class Written, class Scale>
  bool compare(int stage, const char* what, const std::vector<float>& got, const std::vector<float>& want,
               const std::vector<float>& before, size_t ld, Written written, Scale scale) {
    double worst_here = 0;
    const char* why = nullptr;
    size_t bad = 0;
    double bad_scale = 0;
    for (size_t i = 0; i < want.size() && !why; ++i) {
      const size_t r = i / ld, c = i % ld;
      const float g = got[i], w = want[i];
      if (!written(r, c)) {
        if (std::memcmp(&g, &before[i], 4) != 0) why = "written outside the call's rows and panels";
      } else if (!std::isfinite(w) || !std::isfinite(g)) {
        if (!(std::isnan(w) && std::isnan(g)) && g != w) why = "NaN or inf where the reference differs";
      } else {
        const double s = scale(r, c), d = std::fabs(double(g) - w) / std::max(s, 1e-30);
        worst_here = std::max(worst_here, d);
        if (!(d <= kRelTol)) why = "beyond the tolerance", bad_scale = s;
      }
      if (why) bad = i;
    }
    if (worst_here > worst[stage]) worst[stage] = worst_here, worst_at[stage] = what;
    if (!why) return true;
    if (reported++ < 5)
      std::printf("FAIL %s %s: [%zu, %zu] = %.9g, reference %.9g (before %.9g, scale %.4g): %s\n", row, what,
                  bad / ld, bad % ld, got[bad], want[bad], before[bad], bad_scale, why);
    return false;
  }
};

// What a difference in g or u moves h by, at g' and u' (after biases and clamps): |dh/dg| G +
// |dh/du| U, G and U the scales of the sums g and u. silu(g) = g sigmoid(g) and g sigmoid(alpha g)
// have slopes of at most 1.0998 in g; h = silu(g') u' or g' sigmoid(alpha g') (u' + 1).
// The epilogue's own roundings (and the vector exp's error) add a few ulp of h: + |h|.
double glu_scale(double g, double u, double h, const GluParams* glu, double G, double U) {
  const bool alpha = glu && glu->alpha != 0.f;
  const double slope_g = 1.1 * std::fabs(alpha ? u + 1 : u), slope_u = std::fabs(g);
  return slope_g * G + slope_u * U + std::fabs(h);
}

// g' and u' of channel n: the sums g and u after GluParams' biases and clamps (ref_driver.h).
void glu_inputs(double& g, double& u, const GluParams* glu, int n) {
  if (!glu) return;
  if (glu->gate_bias) g += glu->gate_bias[n];
  if (glu->up_bias) u += glu->up_bias[n];
  g = std::min(g, double(glu->limit));
  u = std::clamp(u, -double(glu->limit), double(glu->limit));
}

// Gate/up biases over the channels padded to whole panels, with NaN and inf where GluParams
// defines the result: a NaN g or u stays NaN; +inf in g is clipped to a finite limit, or gives
// silu(inf) = inf (times u, or u' + 1); -inf in g gives -inf / exp(inf) = NaN; +-inf in u is
// clamped to +-limit, or under no limit times silu(g): NaN where g is below -ln(FLT_MAX) (silu's
// -0, from exp's overflow), +-inf where g is above it (a tiny silu).
struct Biases {
  std::vector<float> gate, up;
};

Biases make_biases(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  Biases b;
  b.gate.resize(kPanels * kPanelN);
  b.up.resize(kPanels * kPanelN);
  for (float& v : b.gate) v = normal(rng);
  for (float& v : b.up) v = normal(rng);
  b.gate[3] = NAN;
  b.up[21] = NAN;
  b.gate[37] = INFINITY;
  b.gate[66] = INFINITY;
  b.gate[45] = -INFINITY;
  b.gate[50] = -200.f;  // silu = -0: with up's inf, NaN
  b.gate[51] = -80.f;   // silu tiny but finite: with up's -inf, +inf
  b.gate[52] = -150.f;  // silu = -0 with a finite u
  b.up[50] = INFINITY;
  b.up[51] = -INFINITY;
  b.up[66] = -INFINITY;
  return b;
}

std::vector<GluParams> glu_kinds(const Biases& b) {
  return {
      {.gate_bias = b.gate.data(), .up_bias = b.up.data(), .limit = kGptOssLimit, .alpha = kGptOssAlpha},
      {.gate_bias = b.gate.data(), .up_bias = b.up.data(), .limit = INFINITY, .alpha = 0.f},
      {.gate_bias = nullptr, .up_bias = b.up.data(), .limit = 1.5f, .alpha = 0.f},
      {.gate_bias = b.gate.data(), .up_bias = nullptr, .limit = INFINITY, .alpha = kGptOssAlpha},
      {.gate_bias = nullptr, .up_bias = nullptr, .limit = kGptOssLimit, .alpha = kGptOssAlpha},
  };
}

// W . x for rows [0, T) of x and every panel of w, by the reference's down kernel (weight 1 on
// zeros: out = y exactly): the sums g and u the reference's gate/up epilogue receives.
std::vector<float> ref_sums(const KernelRow& ref, const PackedMatrix& w, const ActView& x, int T) {
  std::vector<float> y(size_t(T) * kPanels * kPanelN, 0.f), ones(T, 1.f);
  std::vector<int32_t> tok(T);
  for (int i = 0; i < T; ++i) tok[i] = i;
  ref.down({.down = &w, .act = x, .m = T, .tok = tok.data(), .weight = ones.data(), .p0 = 0, .p1 = kPanels,
            .out = y.data(), .ldo = size_t(kPanels) * kPanelN});
  return y;
}

double finite_amax(const std::vector<float>& v) {
  double m = 0;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, double(std::fabs(x)));
  return m;
}

// The panel ranges the cases take in turn: all, from 1, from 2 (odd length, a remainder for kernels
// that run 2 panels at once), one panel in the middle.
constexpr int kRanges[4][2] = {{0, kPanels}, {1, kPanels}, {2, kPanels}, {3, 4}};

// Checks `row` against `ref` (the format's generic row) over every case; returns the tally.
Tally check_row(const KernelRow& row, const KernelRow& ref, std::mt19937& rng) {
  const FormatTraits& f = format_traits(row.format);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tally t{.row = row.name};
  // Where the row reads bf16 and the reference f32, both are given the bf16-rounded activations, so
  // both read the same values (q8u against q8s: quantize_act_row gives the same q either way).
  const bool round_bf16 = row.act == ActFormat::bf16 && ref.act == ActFormat::f32;
  const bool nonfinite_acts = float_acts(row.act) && float_acts(ref.act);
  const Biases biases = make_biases(rng);
  const std::vector<GluParams> glus = glu_kinds(biases);
  int c = 0;  // case number: picks the rotating options
  for (const int K : k_cases(f)) {
    // gate and up: rows [n0, n0 + kN) of taller matrices; down: columns [k0, k0 + K) of a wider one
    const int n0 = kPanelN, k0 = f.k_step();
    const QuantizedMatrix qg = quantize(f, make_weights(rng, n0 + kN, K), n0 + kN, K);
    const QuantizedMatrix qu = quantize(f, make_weights(rng, n0 + kN, K), n0 + kN, K);
    const QuantizedMatrix qd = quantize(f, make_weights(rng, kN, k0 + K), kN, k0 + K);
    const Packed gate = pack_slice(row, qg, n0, n0 + kN, 0, K), up = pack_slice(row, qu, n0, n0 + kN, 0, K);
    const Packed down = pack_slice(row, qd, 0, kN, k0, k0 + K);
    const Packed ref_gate = pack_slice(ref, qg, n0, n0 + kN, 0, K), ref_up = pack_slice(ref, qu, n0, n0 + kN, 0, K);
    const Packed ref_down = pack_slice(ref, qd, 0, kN, k0, k0 + K);
    const int Kp = gate.m.Kp;

    for (const int M : kMs) {
      if (M < row.min_m) continue;
      ++c;
      const bool with_rows = c % 3 != 0, pad = c % 2 == 0, with_next = c % 4 < 2;
      const GluParams* glu = c % 6 < 5 ? &glus[c % 6] : nullptr;
      const int p0 = kRanges[c % 4][0], p1 = kRanges[c % 4][1];
      char what[160];
      std::snprintf(what, sizeof what, "K %d M %d rows %d glu %d panels [%d, %d) pad %d", K, M, with_rows,
                    glu ? int(glu - glus.data()) : -1, p0, p1, pad);

      bool agree;
      // stage 1: h[i] = gated(gate . x[rows[i]], up . x[rows[i]]) over T rows of x, M of them used
      {
        int T = M;  // rows[i] = (7i + 3) mod T over T > M rows: distinct where 7 does not divide T
        if (with_rows) T = (M + 5) % 7 ? M + 5 : M + 6;
        std::vector<float> x(size_t(T) * K);
        for (float& v : x) v = normal(rng);
        std::vector<int32_t> rows(M);
        for (int i = 0; i < M; ++i) rows[i] = with_rows ? (7 * i + 3) % T : i;
        if (c % 5 == 2) std::fill_n(&x[size_t(rows[0]) * K], K, 0.f);  // an all-zero row: scale 0
        std::vector<float> xr = x;
        if (round_bf16)
          for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
        Acts a = make_acts(row.act, x, T, K, Kp, pad), ar = make_acts(ref.act, xr, T, K, Kp, pad);
        if (nonfinite_acts && c % 3 == 1)  // the last row's last k: NaN through g and u
          for (Acts* v : {&a, &ar}) poke_act(*v, rows[M - 1], K - 1, NAN);
        const size_t ldh = size_t(kPanels) * kPanelN + 8;
        const std::vector<float> before(ldh * M, -3.25f);
        std::vector<float> h = before, href = before;
        GateUpArgs args{.gate = &gate.m, .up = &up.m, .act = a.view, .rows = with_rows ? rows.data() : nullptr,
                        .m = M, .p0 = p0, .p1 = p1, .h = h.data(), .ldh = ldh, .glu = glu};
        row.gateup(args);
        args.gate = &ref_gate.m;
        args.up = &ref_up.m;
        args.act = ar.view;
        args.h = href.data();
        ref.gateup(args);
        // the reference's sums g and u of every row (its down kernel: out = 1 * (W . x)), and their scales
        const std::vector<float> g = ref_sums(ref, ref_gate.m, ar.view, T), u = ref_sums(ref, ref_up.m, ar.view, T);
        const double G = finite_amax(g), U = finite_amax(u);
        char stage[200];
        std::snprintf(stage, sizeof stage, "gateup %s", what);
        agree = t.compare(
            0, stage, h, href, before, ldh,
            [&](size_t, size_t col) { return col >= size_t(p0) * kPanelN && col < size_t(p1) * kPanelN; },
            [&](size_t i, size_t n) {
              const size_t at = size_t(with_rows ? rows[i] : int(i)) * kPanels * kPanelN + n;
              double gi = g[at], ui = u[at];
              glu_inputs(gi, ui, glu, int(n));
              return glu_scale(gi, ui, href[i * ldh + n], glu, G, U);
            });
      }

      // stage 2: out[tok[i]] += weight[i] * (down . h[i]), tokens scattered over T rows of out
      {
        std::vector<float> x(size_t(M) * K);
        for (float& v : x) v = normal(rng);
        std::vector<float> xr = x;
        if (round_bf16)
          for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
        Acts a = make_acts(row.act, x, M, K, Kp, pad), ar = make_acts(ref.act, xr, M, K, Kp, pad);
        // row 0: +inf; the last row: +inf and -inf (NaN in the channels whose two weights have one sign)
        if (nonfinite_acts && c % 3 == 2)
          for (Acts* v : {&a, &ar}) {
            poke_act(*v, 0, 0, INFINITY);
            poke_act(*v, M - 1, K - 1, INFINITY);
            if (K > 1) poke_act(*v, M - 1, (K - 1) / 2, -INFINITY);
          }
        const int T = M + 3;  // tok[i] = (M - 1 - i) T / M: distinct, descending, with gaps
        std::vector<int32_t> tok(M);
        std::vector<float> weight(M);
        for (int i = 0; i < M; ++i) tok[i] = (M - 1 - i) * T / M, weight[i] = 0.25f + 0.5f * float(i % 4);
        const size_t ldo = size_t(kPanels) * kPanelN + 12;
        std::vector<float> before(ldo * T);
        for (float& v : before) v = normal(rng);
        std::vector<float> out = before, oref = before;
        DownArgs args{.down = &down.m, .act = a.view, .m = M, .tok = tok.data(), .weight = weight.data(),
                      .p0 = p0, .p1 = p1, .out = out.data(), .ldo = ldo,
                      .next = with_next ? up.m.data : nullptr};
        row.down(args);
        args.down = &ref_down.m;
        args.act = ar.view;
        args.out = oref.data();
        ref.down(args);
        std::vector<bool> tok_row(T, false);
        for (int i : tok) tok_row[i] = true;
        const auto written = [&](size_t r, size_t col) {
          return tok_row[r] && col >= size_t(p0) * kPanelN && col < size_t(p1) * kPanelN;
        };
        double Y = 0;  // the scale of the sums: the largest finite increment weight * y
        for (size_t i = 0; i < out.size(); ++i)
          if (written(i / ldo, i % ldo) && std::isfinite(oref[i] - before[i]))
            Y = std::max(Y, std::fabs(double(oref[i]) - before[i]));
        char stage[200];
        std::snprintf(stage, sizeof stage, "down %s next %d", what, with_next);
        // the sums' roundings, and the final addition's (FMA or not) to out: + |out|
        agree &= t.compare(1, stage, out, oref, before, ldo, written,
                  [&](size_t r, size_t col) { return Y + std::fabs(oref[r * ldo + col]); });
      }
      ++t.cases;
      t.failed += !agree;
    }
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  bool verbose = false;  // -v: print the case of each stage's worst difference
  std::string filter;     // only rows whose name contains it
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "-v") verbose = true;
    else filter = argv[i];
  }
  const IsaTier tier = active_tier();
  std::printf("rows_check: the kernel rows of tier %s against the generic rows\n", tier_name(tier));
  int rows = 0, failed = 0;
  for (const KernelRow& row : kernel_table()) {
    if (row_tier(row.needs) != tier || std::string(row.name).find(filter) == std::string::npos) continue;
    const KernelRow& ref = select_kernel(row.format, /*have=*/0);
    if (&row == &ref) continue;  // the generic tier's own rows
    // data seeded by the row's name: `rows_check <name>` repeats the cases of the full run
    std::seed_seq seed(row.name, row.name + std::strlen(row.name));
    std::mt19937 rng(seed);
    const auto start = std::chrono::steady_clock::now();
    const Tally t = check_row(row, ref, rng);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-40s %3d cases, %3d failed, %4.1f s; worst |diff| / scale: gate/up %.2e, down %.2e (vs %s)\n",
                row.name, t.cases, t.failed, seconds, t.worst[0], t.worst[1], ref.name);
    if (verbose)
      for (int s = 0; s < 2; ++s) std::printf("    worst %s: %s\n", s ? "down" : "gate/up", t.worst_at[s].c_str());
    ++rows;
    failed += t.failed != 0;
  }
  if (rows == 0) std::printf("rows_check: tier %s has no kernel row: nothing checked\n", tier_name(tier));
  std::printf("rows_check: %d rows, %d failed\n", rows, failed);
  return rows == 0 || failed != 0;
}
