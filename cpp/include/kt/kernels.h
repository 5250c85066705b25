// The MoE micro-kernel interface and the kernel table (ordered best-first).
// A row serves one weight format, declares the CPU features it needs and names the activation
// format it reads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kt/cpu_features.h"
#include "kt/formats.h"
#include "kt/gguf_blocks.h"

namespace kt {

// Rows of activations in the kernel's activation format; K padded to the weights' Kp with zeros.
struct ActView {
  ActFormat format = ActFormat::f32;
  const uint8_t* data = nullptr;
  size_t stride = 0;              // bytes between rows
  const float* scale = nullptr;   // q8s/q8u: per-row scale s, x ~ s * q
  const int32_t* gsum = nullptr;  // q8s: per-row sums of q over each group of 32 k
  int gsum_stride = 0;            // int32s between rows of gsum
  int Kp = 0;
};

// The gated activation of stage 1 beyond plain SwiGLU (gpt-oss and its kin), with g = gate[n] . x
// and u = up[n] . x:
//   g' = min(g + gate_bias[n], limit),  u' = clamp(u + up_bias[n], -limit, limit)
//   h = silu(g') * u'                    alpha == 0
//   h = g' * sigmoid(alpha g') * (u' + 1)  alpha != 0 (gpt-oss's SwiGLU)
// limit = +inf clamps nothing; a bias pointer covers the call's channels padded with zeros to
// whole panels (nullptr: no bias; the layer refuses non-finite biases at load). A NaN g or u stays
// NaN. An infinite g or u (a dot product past fp32's range) gives what the fp32 formulas give with
// an exact-to-rounding exp that overflows to +inf past kExpOverflow, as torch's: silu(+inf) = +inf,
// silu(-inf) = -inf / inf = NaN, and an infinite u' times a silu that rounded to -0 is NaN.
struct GluParams {
  const float* gate_bias = nullptr;
  const float* up_bias = nullptr;
  float limit = __builtin_inff();
  float alpha = 0.f;
};

// The largest float whose fp32 exp is finite (ln(FLT_MAX) rounded down): every kernel's exp is
// +inf above it, as std::exp.
constexpr float kExpOverflow = 88.72283172607421875f;

// stage 1 of an expert: h[i, n] = silu(gate[n] . x[rows[i]]) * (up[n] . x[rows[i]]), or with glu
// the activation GluParams describes,
//   for panels [p0, p1) (n = 16 p + c) and i in [0, m); rows == nullptr means row i.
struct GateUpArgs {
  const PackedMatrix* gate;
  const PackedMatrix* up;
  ActView act;
  const int32_t* rows;
  int m;
  int p0, p1;
  float* h;
  size_t ldh;  // floats between rows of h
  const GluParams* glu = nullptr;  // nullptr: h = silu(g) * u
};

// stage 2 of an expert: out[tok[i], n] += weight[i] * (down[n] . h[i])
//   for panels [p0, p1) and i in [0, m); out rows are ldo floats apart, padded to whole panels.
struct DownArgs {
  const PackedMatrix* down;
  ActView act;
  int m;
  const int32_t* tok;
  const float* weight;
  int p0, p1;
  float* out;
  size_t ldo;
  // The down matrix the caller runs next over the same panels (its PackedMatrix::data), or
  // nullptr: a driver may prefetch its first panels while it computes this call's last ones.
  const uint8_t* next = nullptr;
};

using GateUpFn = void (*)(const GateUpArgs&);
using DownFn = void (*)(const DownArgs&);

// A packed layout other than the format's own (FormatTraits::pack): the same bytes per panel,
// arranged for one kernel family. Its functions are generic code (formats/), run at load.
struct PanelLayout {
  const char* name;
  void (*pack)(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
  void (*unpack_row)(const uint8_t* data, int Kp, int n, int K, float* out);  // as FormatTraits::unpack_row
};

struct KernelRow {
  FormatId format;
  FeatureSet needs;  // every feature its object is compiled for (kernels/kernel_registry.h)
  ActFormat act;
  const char* name;  // <op>_<weight fmt>_<act fmt>_<MR>x<NR>__<isa>, gate/up variant
  GateUpFn gateup;
  DownFn down;
  // Tokens per expert at or above which this row runs; 0: every bucket (a vector kernel). A tile
  // row (min_m > 0) leaves the smaller buckets of a call to the best vector row of the same format,
  // which reads the same packed weights and the same activation format.
  int min_m;
  // The packed layout the row reads; nullptr: the format's (FormatTraits::pack).
  const PanelLayout* layout = nullptr;
};

// The packing and unpacking of what `row` reads.
void pack_for(const KernelRow& row, const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void unpack_row_for(const KernelRow& row, const uint8_t* data, int Kp, int n, int K, float* out);

const std::vector<KernelRow>& kernel_table();
// Test-only: the AMX tile kernels instantiated on the tile emulator (kernels/amx_emu), one row per
// format, needing amx_tile_emu where the hardware row needs amx_tile. No detected CPU has that
// feature: only the "amx_emu" named set (a test-only override) reaches these rows.
const std::vector<KernelRow>& emulated_kernel_table();
// The dispatch of every layer: the first row for `format`, in emulated_kernel_table() then
// kernel_table(), whose needs `have` covers. The generic rows need nothing, so one always matches.
const KernelRow& select_kernel(FormatId format, FeatureSet have);
// The first kernel_table() row for `format` that `have` covers and whose min_m is 0.
const KernelRow& select_vector_kernel(FormatId format, FeatureSet have);
// The lowest tier whose features cover `needs`, amx_tile_emu counting as amx_tile and features no
// tier names (avx_vnni) left out: the tier a row is listed under, for listings and tests.
IsaTier row_tier(FeatureSet needs);

// Weight quantizers, one table ordered best-first like the kernels'. Every row produces exactly
// the logical arrays of the format's quantize_ref (bit for bit, on every input); the generic row
// is quantize_ref itself. Callers choose a row once (a layer at construction, a binding call at
// its start) and call it for every matrix.
using QuantizeFn = void (*)(const float* w, int N, int K, QuantizedMatrix* out);
struct QuantizerRow {
  FormatId format;
  FeatureSet needs;  // every feature its object is compiled for
  const char* name;  // quantize_<weight fmt>_<lanes>__<isa>, or the reference's name
  QuantizeFn quantize;
};
const std::vector<QuantizerRow>& quantizer_table();
const QuantizerRow& select_quantizer(FormatId format, FeatureSet have);

// Activation quantization reference. Converts one row of K fp32 values into `format`, zero-padded
// to Kp. Returns false if the row holds NaN or Inf.
bool quantize_act_row(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale,
                      int32_t* gsum);
size_t act_row_bytes(ActFormat format, int Kp);
// One block of the GGUF kernels' activations (q8_32, q8_256) from kK values.
void quantize_act_block(const float* x, ActQ8x32* b);
void quantize_act_block(const float* x, ActQ8x256* b);
// n bf16 or f16 values (dtype) to fp32, as bf16_to_f32 / f16_to_f32 do.
void widen_row_ref(DType dtype, const uint16_t* x, int n, float* out);
// n fp32 values to bf16, as f32_to_bf16 does (round to nearest even; NaN stays NaN).
void round_bf16_row_ref(const float* x, int n, uint16_t* out);

// Activation codecs: the conversions around the kernels (input rows to fp32, fp32 rows to the
// kernels' activation format, fp32 outputs to bf16), one table ordered best-first. Every row gives
// the reference's bits (the generic row is the reference), so that the kernels of every tier see
// the same activations and a layer's output does not depend on which codec ran.
struct ActCodecRow {
  FeatureSet needs;  // every feature its object is compiled for
  const char* name;  // act_<lanes>__<isa>, or the reference's
  bool (*quantize)(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale, int32_t* gsum);
  void (*widen)(DType dtype, const uint16_t* x, int n, float* out);
  void (*round_bf16)(const float* x, int n, uint16_t* out);
};
const std::vector<ActCodecRow>& act_codec_table();
const ActCodecRow& select_act_codec(FeatureSet have);

}  // namespace kt
