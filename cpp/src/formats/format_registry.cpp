// The format records: one per weight format, the single source of truth for C++ and Python
// (kt_kernel._ext.formats() exposes them; the converter, loaders, doctor, tests and benchmarks
// iterate them). Adding a format: docs/adding_a_format.md.
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kt/formats.h"
#include "format_impl.h"
#include "gguf_format.h"

namespace kt {
namespace {

constexpr unsigned kFloatActs = act_bit(ActFormat::f32) | act_bit(ActFormat::bf16);
constexpr unsigned kQ8Acts = act_bit(ActFormat::q8s) | act_bit(ActFormat::q8u);


// A GGUF block type's record: the file's blocks, packed by whole blocks (gguf_format.h), read by
// kernels that multiply integers against activation blocks `act`. ggml_type: its GGUF type id.
#define KT_GGUF_RECORD(fmt, Block, act, ggml_type, weight_rel_err, layer_rel_err, kl_mean, top1, tie_margin)         \
  {FormatId::fmt, #fmt, kGgufMethod, /*quant_method=*/"", /*group=*/Block::kK, Block::kK,                           \
   sizeof(GgufPanelBlock<Block>), /*panel_tail_bytes=*/0, {{"blocks", "blocks", "U8", 8, ArrayPer::block}},         \
   act_bit(ActFormat::act), /*int_dot=*/true, weight_rel_err, layer_rel_err,                                        \
   AgreementBounds{kl_mean, top1, tie_margin}, fmt##_quantize_ref, fmt##_dequantize_ref, fmt##_pack,               \
   fmt##_unpack_row, ggml_type}

// The bounds' figures: relative errors on Gaussian data (weight_rel_err: W [256, 2048]); the
// layer's on shapes A and S of benchmarks/shapes.py; agreement over the tiny models of
// kt_kernel.models.tiny (seed 0, 3 architectures x {all experts on CPU, half in torch} x the ISA
// tiers generic..avx512_bf16), 339 positions of REFERENCE_PROMPT. Agreement bounds: KL at 2.5x the
// worst measured, top-1 at the worst minus about 3-4 standard deviations of an agreement rate over
// 339 positions, tie_margin at 1.25-3x the p99 of how much the format moves the reference's top-2 gap.
constexpr FormatTraits kFormats[kNumFormats] = {
    // bf16: rounding to 8 significant bits leaves ulp/sqrt(12) rms, at most 2^-7/sqrt(12) = 0.23%
    // of a value (weight_rel_err; measured 0.16%). Through gate/up, down and the bf16 output about
    // 0.35% (0.5% with the bf16 activations of avx512_bf16): layer_rel_err 1%. Agreement: KL
    // < 5e-6, top-1 0.997, gap error p99 0.012 on qwen3_moe, deepseek_v3, mixtral; gpt-oss KL mean
    // 1.17e-4 (avx2) to 1.25e-4 (avx512_bf16), nearly all of it one position where the bf16
    // rounding of the first layer's output flips a near-tie of the second layer's top-4 (KL 0.039
    // there), top-1 0.997: KL bound 3e-4 (2.5x).
    {FormatId::bf16, "bf16", "BF16", "bf16", /*group=*/0, Bf16Block::kK, sizeof(Bf16Block), /*panel_tail_bytes=*/0,
     {{"values", "qweight", "BF16", 16, ArrayPer::value}},
     kFloatActs, /*int_dot=*/false, /*weight_rel_err=*/0.0025, /*layer_rel_err=*/0.01,
     AgreementBounds{/*kl_mean=*/3e-4, /*top1=*/0.98, /*tie_margin=*/0.05},
     bf16_quantize_ref, bf16_dequantize_ref, bf16_pack, bf16_unpack_row, /*gguf_type=*/30},
    // int8_pc: step s = amax/127 per channel, error s/sqrt(12) rms; amax of 2048 Gaussians is about
    // 3.5 sigma, so 3.5/(127 sqrt 12) = 0.8% (weight_rel_err 1%). The q8 activations (x and h) add
    // the same kind of error; through the layer about 1.8-2.7% measured: layer_rel_err 4%.
    // Agreement: KL 7.5e-4, top-1 0.991, gap error p99 0.16 (max 1.18: a routing near-tie flipped);
    // gpt-oss KL 6.9e-4, top-1 0.985.
    {FormatId::int8_pc, "int8_pc", "AMXINT8", "int8", /*group=*/0, Int8PcBlock::kK, sizeof(Int8PcBlock), sizeof(Int8PcTail),
     {{"values", "qweight", "I8", 8, ArrayPer::value}, {"scale", "scale", "F32", 32, ArrayPer::row}},
     kQ8Acts, /*int_dot=*/true, /*weight_rel_err=*/0.01, /*layer_rel_err=*/0.04,
     AgreementBounds{/*kl_mean=*/2e-3, /*top1=*/0.96, /*tie_margin=*/0.25},
     int8pc_quantize_ref, int8pc_dequantize_ref, int8pc_pack, int8pc_unpack_row},
    // int4_g32: 16 levels over the range of 32 Gaussians (~4.1 sigma): step 0.27 sigma, error
    // 0.079 sigma rms by plain min/max rounding (7.2% measured), the least-squares refit does
    // better (6.9% measured): weight_rel_err 7.5%. Gate and up errors combine in h (~10%), down
    // adds ~7%: about 13% through the layer, layer_rel_err 20% leaves room for the few outputs of
    // M = 1. Agreement: KL 8.2e-3, top-1 0.944, gap error p99 0.79 (gpt-oss, its biased experts
    // and clamped SwiGLU: KL 1.29e-2, top-1 0.929).
    {FormatId::int4_g32, "int4_g32", "AMXINT4", "int4", /*group=*/Int4G32Block::kK, Int4G32Block::kK, sizeof(Int4G32Block),
     /*panel_tail_bytes=*/0,
     {{"values", "qweight", "U8", 4, ArrayPer::value},
      {"group_scale", "scale", "F16", 16, ArrayPer::group},
      {"group_min", "min", "F16", 16, ArrayPer::group}},
     act_bit(ActFormat::q8s), /*int_dot=*/true, /*weight_rel_err=*/0.075, /*layer_rel_err=*/0.20,
     AgreementBounds{/*kl_mean=*/2e-2, /*top1=*/0.90, /*tie_margin=*/1.0},
     int4g32_quantize_ref, int4g32_dequantize_ref, int4g32_pack, int4g32_unpack_row},
    // fp8_g128: e4m3 keeps 4 significant bits, a relative step of 2^-3 to 2^-4 (about 2.5% rms
    // of a Gaussian value with the group's amax at 448). weight_rel_err: 2.38-3.05% measured
    // (seeds 1, 3, 10-13), bound 4%. layer_rel_err on random_moe layers S (E 16, K 4) and A's
    // H, I with E 16: 4.5% at M 8 and 64, 5.55% at worst of 20 single tokens, on avx512,
    // avx512_bf16 and generic alike (the weights' error: the activations add little): bound 7.5%.
    // Agreement (3 architectures x {all experts on CPU, half in torch}, avx512 and avx512_bf16):
    // KL mean <= 1.84e-3, top-1 >= 0.982, gap error p99 <= 0.30 (max 1.12, mixtral); gpt-oss KL
    // 1.88e-3, top-1 0.973: bounds KL 5e-3, top-1 0.95, tie margin 0.6.
    {FormatId::fp8_g128, "fp8_g128", "FP8", "fp8", /*group=*/Fp8G128Block::kK, Fp8G128Block::kK, sizeof(Fp8G128Block),
     /*panel_tail_bytes=*/0,
     {{"values", "qweight", "F8_E4M3", 8, ArrayPer::value}, {"scale", "scale", "F32", 32, ArrayPer::group}},
     kFloatActs, /*int_dot=*/false, /*weight_rel_err=*/0.04, /*layer_rel_err=*/0.075,
     AgreementBounds{/*kl_mean=*/5e-3, /*top1=*/0.95, /*tie_margin=*/0.6},
     fp8g128_quantize_ref, fp8g128_dequantize_ref, fp8g128_pack, fp8g128_unpack_row, /*gguf_type=*/-1,
     fp8g128_check},
    // q8_0: step amax/127 per 32 weights (amax of 32 Gaussians ~2.0-2.1 sigma): about 0.5% rms
    // (weight_rel_err: measured 0.51-0.52%, bound 0.7%). The layer adds q8 activations per block of
    // 32 to x and h: measured 1.5% on random_moe layers (E 8, H = I = 512, M 1 and 64), bound 2%.
    // Agreement (tests/test_gguf_models.py, as the legacy types'): KL mean 1.2e-5 to 5.3e-5, top-1
    // >= 0.994: bounds KL 1e-3, top-1 0.97, tie margin 0.25.
    KT_GGUF_RECORD(q8_0, BlockQ8_0, q8_32, /*ggml_type=*/8, 0.007, 0.02, 1e-3, 0.97, 0.25),
    // f16, f32: the file's values (f16: 11 significant bits, 2^-11/sqrt(12) = 0.014% rms; f32 exact);
    // fp32 activations: the layer's error is the bf16 output's. Agreement (tests/test_gguf_models.py):
    // f16 KL mean <= 1.1e-6, top-1 1.000; bounds as bf16's.
    {FormatId::f16, "f16", kGgufMethod, /*quant_method=*/"", /*group=*/0, F16Block::kK, sizeof(F16Block), /*panel_tail_bytes=*/0,
     {{"values", "values", "F16", 16, ArrayPer::value}},
     act_bit(ActFormat::f32), /*int_dot=*/false, /*weight_rel_err=*/3e-4, /*layer_rel_err=*/0.01,
     AgreementBounds{/*kl_mean=*/1e-4, /*top1=*/0.98, /*tie_margin=*/0.05},
     f16_quantize_ref, f16_dequantize_ref, f16_pack, f16_unpack_row, /*gguf_type=*/1},
    {FormatId::f32, "f32", kGgufMethod, /*quant_method=*/"", /*group=*/0, F32Block::kK, sizeof(F32Block), /*panel_tail_bytes=*/0,
     {{"values", "values", "F32", 32, ArrayPer::value}},
     act_bit(ActFormat::f32), /*int_dot=*/false, /*weight_rel_err=*/1e-6, /*layer_rel_err=*/0.01,
     AgreementBounds{/*kl_mean=*/1e-4, /*top1=*/0.98, /*tie_margin=*/0.05},
     f32_quantize_ref, f32_dequantize_ref, f32_pack, f32_unpack_row, /*gguf_type=*/0},
    // The legacy 32-weight types (quantize_block: q4_0..q5_1 gguf.quants.quantize's blocks bit for
    // bit, iq4_nl our least-squares search). Measured: weight error on W [256, 2048] by
    // test_formats' matvec (seeds 1, 2) / test_gguf_formats' (seed 3, 8 columns); layer error
    // against the fp32-weight reference on random_moe layers S and A (A with E = 16) at M = 64, and
    // the worst of 20 single tokens (S, M = 1); generic tier. Bounds 25-50% above the worst figure.
    // Agreement (tests/test_gguf_models.py: the tiny models with I = 256 from a GGUF file, against
    // the same model whose experts are gguf's dequantization of the blocks; 3 architectures, gate/up
    // and down pairs q4_0/q5_1, q4_1/q5_0, iq4_nl/f32): KL mean 1.4e-5 to 3.1e-4, top-1 >= 0.988;
    // the K-quants' bound (the same q8 rounding of x and h, by blocks of 32), KL 3e-3, top-1 0.95,
    // tie margin 1.0.
    // q4_0: d = max / -8, 16 levels: weight 8.00% / 8.30%; layer 15.1% (S), 15.0% (A), 18.6% (M 1).
    KT_GGUF_RECORD(q4_0, BlockQ4_0, q8_32, /*ggml_type=*/2, 0.11, 0.24, 3e-3, 0.95, 1.0),
    // q4_1: min/max range, 16 levels: weight 7.04% / 8.03%; layer 14.0% (S), 13.8% (A), 18.1% (M 1).
    KT_GGUF_RECORD(q4_1, BlockQ4_1, q8_32, /*ggml_type=*/3, 0.11, 0.23, 3e-3, 0.95, 1.0),
    // q5_0: d = max / -16, 32 levels: weight 4.08% / 4.32%; layer 7.60% (S), 7.49% (A), 9.30% (M 1).
    KT_GGUF_RECORD(q5_0, BlockQ5_0, q8_32, /*ggml_type=*/6, 0.06, 0.12, 3e-3, 0.95, 1.0),
    // q5_1: min/max range, 32 levels: weight 3.62% / 3.72%; layer 6.87% (S), 6.75% (A), 7.70% (M 1).
    KT_GGUF_RECORD(q5_1, BlockQ5_1, q8_32, /*ggml_type=*/7, 0.05, 0.10, 3e-3, 0.95, 1.0),
    // iq4_nl: 16 non-uniform levels, d refit by least squares: weight 6.41% / 7.17%; layer 13.2%
    // (S), 12.9% (A), 14.2% (M 1).
    KT_GGUF_RECORD(iq4_nl, BlockIq4Nl, q8_32, /*ggml_type=*/20, 0.095, 0.18, 3e-3, 0.95, 1.0),
    // The K-quants and iq4_xs: 256-weight super-blocks, q8_256 activations, our quantizers
    // (formats/kquant_fit.h). Measured: weight_rel_err on Gaussian W [256, 2048] (the test's seed 3;
    // seeds 10-13 at most, in brackets), layer_rel_err on shape S (H=512, I=256, E=16, K=4;
    // M = 1, 8, 64; q4_K also on A's H=2048, I=768 with E=16: 12.0-12.3%), both projections in the
    // format. Bounds about 30% past them.
    //            weight               layer
    //   q2_K     25.5% (26.7%)  35%   41.7-44.4% 60%
    //   q3_K     14.1% (14.7%)  19%   24.8-26.0% 35%
    //   q4_K     6.95% (7.15%)  9%    12.2-13.2% 18%
    //   q5_K     3.46% (3.49%)  4.5%  6.3-7.0%   9.5%
    //   q6_K     1.66% (1.71%)  2.2%  3.4-3.7%   5%
    //   iq4_xs   7.25% (7.61%)  9.5%  13.3-14.6% 20%
    // Agreement, against the model whose experts are gguf's dequantization of the blocks (as
    // kt_kernel.models.gguf_experts' reference): the tiny models with I=256 (whole super-blocks;
    // qwen3_moe and deepseek_v3 overridden from 128), the kernels emulated in torch (q8_256 rounding
    // of x and h), 3 architectures x 6 formats: KL mean 3e-5 to 1.9e-3 (mixtral q6_K; the rest
    // <= 4.5e-4), top-1 >= 0.976, reference gap of a differing argmax <= 0.63: one bound for the six
    // (the activations' rounding is the same), KL 3e-3, top-1 0.95, tie margin 1.0. Against the
    // original fp32 experts (the quantizer's error too) the worst of the 3 models measured KL 7.7e-2,
    // 2.6e-2, 8.8e-3, 2.4e-3, 1.6e-3, 7.9e-3 and top-1 0.79, 0.89, 0.94, 0.97, 0.99, 0.95 (q2_K ... iq4_xs).
    KT_GGUF_RECORD(q2_K, BlockQ2_K, q8_256, /*ggml_type=*/10, 0.35, 0.60, 3e-3, 0.95, 1.0),
    KT_GGUF_RECORD(q3_K, BlockQ3_K, q8_256, /*ggml_type=*/11, 0.19, 0.35, 3e-3, 0.95, 1.0),
    KT_GGUF_RECORD(q4_K, BlockQ4_K, q8_256, /*ggml_type=*/12, 0.09, 0.18, 3e-3, 0.95, 1.0),
    KT_GGUF_RECORD(q5_K, BlockQ5_K, q8_256, /*ggml_type=*/13, 0.045, 0.095, 3e-3, 0.95, 1.0),
    KT_GGUF_RECORD(q6_K, BlockQ6_K, q8_256, /*ggml_type=*/14, 0.022, 0.05, 3e-3, 0.95, 1.0),
    KT_GGUF_RECORD(iq4_xs, BlockIq4Xs, q8_256, /*ggml_type=*/23, 0.095, 0.20, 3e-3, 0.95, 1.0),
    // mxfp4: e2m1 (levels 0 .. 6, relative steps of 1/3 to 1/2 near the top) under a power-of-two
    // scale per 32. Method MXFP4 (gpt-oss releases, kt_kernel/checkpoint/mxfp4.py) and GGUF type 39.
    // Its kernels are the iq4_nl kernels' with the e2m1 levels and q8_32 activations. Measured
    // (our quantizer, formats/mxfp4.cpp; gguf's quantize gives 11.47% on seed 3, ours 11.07%):
    // weight_rel_err 10.9-11.5% (seeds 1, 3, 10-13), bound 14.5%; layer_rel_err 18.9-19.3% at M 8
    // and 64, 22.0% at worst of 20 single tokens (shape S, and A's H, I with E 16), bound 28%.
    // Agreement against the fp32 models (3 architectures x {all experts on CPU, half in torch},
    // avx2 and avx512_bf16 alike): KL mean 3.7e-3 to 1.83e-2 (mixtral), top-1 >= 0.912, every
    // decoded token the argmax or a near-tie: bounds KL 5e-2, top-1 0.86, tie margin 1.0 (as int4_g32's).
    // gpt-oss: KL 1.42e-2 (half) and 2.46e-2 (all on CPU), top-1 0.914.
    {FormatId::mxfp4, "mxfp4", "MXFP4", /*quant_method=*/"", /*group=*/BlockMxfp4::kK, BlockMxfp4::kK,
     sizeof(GgufPanelBlock<BlockMxfp4>), /*panel_tail_bytes=*/0, {{"blocks", "blocks", "U8", 8, ArrayPer::block}},
     act_bit(ActFormat::q8_32), /*int_dot=*/true, /*weight_rel_err=*/0.145, /*layer_rel_err=*/0.28,
     AgreementBounds{/*kl_mean=*/5e-2, /*top1=*/0.86, /*tie_margin=*/1.0}, mxfp4_quantize_ref, mxfp4_dequantize_ref,
     mxfp4_pack, mxfp4_unpack_row, /*gguf_type=*/39, mxfp4_check},
    // int4_g32_zp: int4_g32 with an integer zero point, w = d (q - z), the format int4 releases load
    // into (methods RAWINT4, GPTQ_INT4; no method names it: kt_kernel/checkpoint/int4_release.py),
    // exactly, symmetric or not. Its kernels are int4_g32's with the group minimum formed as
    // d * (-z) in fp32, reading q8_32 activations (a scale per 32 values: half the rounding error
    // of q8s, docs/benchmarks/notes.md). Its quantizer (round to nearest, the zero point an
    // integer: float weights given to a release method): weight_rel_err 7.76-7.96% measured (seeds
    // 1, 3, 10-13; int4_g32's least-squares minimum 7.2-7.3%), bound 8.5%; layer_rel_err 13.7% at
    // M 8 and 64, 15.9% at worst of 20 single tokens (shape S, and A's H, I with E 16), bound 20%
    // as int4_g32's. Agreement, as for the GGUF types, against the same weights decoded (the
    // releases' own weights: only the activations' rounding differs): tiny compressed-tensors and
    // AutoGPTQ releases, symmetric and asymmetric, 3 architectures, all experts on the CPU or half:
    // KL mean <= 2.8e-4, top-1 >= 0.976: bounds KL 3e-3, top-1 0.95, tie margin 1.0 (the GGUF types').
    {FormatId::int4_g32_zp, "int4_g32_zp", /*method=*/"", /*quant_method=*/"", /*group=*/Int4G32Block::kK,
     Int4G32Block::kK, sizeof(Int4G32Block), /*panel_tail_bytes=*/0,
     {{"values", "qweight", "U8", 4, ArrayPer::value},
      {"group_scale", "scale", "F16", 16, ArrayPer::group},
      {"group_zero", "zero", "U8", 8, ArrayPer::group}},
     act_bit(ActFormat::q8_32), /*int_dot=*/true, /*weight_rel_err=*/0.085, /*layer_rel_err=*/0.20,
     AgreementBounds{/*kl_mean=*/3e-3, /*top1=*/0.95, /*tie_margin=*/1.0},
     int4g32zp_quantize_ref, int4g32zp_dequantize_ref, int4g32zp_pack, int4g32zp_unpack_row, /*gguf_type=*/-1,
     int4g32zp_check},
};
#undef KT_GGUF_RECORD

constexpr bool records_in_id_order() {
  for (int i = 0; i < kNumFormats; ++i)
    if (static_cast<int>(kFormats[i].id) != i) return false;
  return true;
}
static_assert(records_in_id_order(), "kFormats must list the formats in KT_FORMAT_IDS order");

template <class Get>
std::string list_of(Get get) {  // each name once, in record order; none empty
  std::string s;
  for (int i = 0; i < kNumFormats; ++i) {
    bool seen = !*get(kFormats[i]);
    for (int j = 0; j < i; ++j) seen |= std::string(get(kFormats[j])) == get(kFormats[i]);
    if (!seen) s += std::string(s.empty() ? "" : ", ") + get(kFormats[i]);
  }
  return s;
}

}  // namespace

const char* act_format_name(ActFormat a) {
  static const char* names[kNumActFormats] = {"f32", "bf16", "q8s", "q8u", "q8_32", "q8_256"};
  return names[static_cast<int>(a)];
}

const ElementType& element_type(const char* safetensors_dtype) {
  static const ElementType types[] = {
      {"BF16", 2, "uint16"}, {"F16", 2, "uint16"}, {"F32", 4, "float32"}, {"I8", 1, "int8"}, {"U8", 1, "uint8"},
      {"F8_E4M3", 1, "uint8"}};
  for (const ElementType& t : types)
    if (std::strcmp(safetensors_dtype, t.safetensors) == 0) return t;
  throw std::invalid_argument(std::string("no element type for safetensors dtype ") + safetensors_dtype);
}

void shape_quantized(const FormatTraits& f, int N, int K, QuantizedMatrix* out) {
  out->format = f.id;
  out->N = N;
  out->K = K;
  for (int i = 0; i < kMaxFormatArrays; ++i)
    out->arrays[i].resize(i < f.num_arrays()
                              ? size_t(N) * f.array_row_elems(i, K) * element_type(f.arrays[i].dtype).bytes
                              : 0);
}

size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

const FormatTraits& format_traits(FormatId id) { return kFormats[static_cast<int>(id)]; }

const FormatTraits& format_by_name(const std::string& name) {
  for (const auto& f : kFormats)
    if (name == f.name) return f;
  throw std::invalid_argument("unknown weight format '" + name + "'; valid formats: " +
                              list_of([](const FormatTraits& f) { return f.name; }));
}

const FormatTraits& format_by_method(const std::string& method) {
  if (method == kGgufMethod)
    throw std::invalid_argument(std::string(kGgufMethod) + " takes the formats of a GGUF file's tensors: name them (gate/up and down)");
  for (const auto& f : kFormats)
    if (*f.method && method == f.method) return f;
  throw std::invalid_argument("unknown method '" + method + "'; valid methods: " +
                              list_of([](const FormatTraits& f) { return f.method; }));
}

const std::vector<const FormatTraits*>& all_formats() {
  static const std::vector<const FormatTraits*> v = [] {
    std::vector<const FormatTraits*> out;
    for (const auto& f : kFormats) out.push_back(&f);
    return out;
  }();
  return v;
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                           // round to nearest even
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    uint32_t u = 0x7f800000u | (mant << 13);
    std::memcpy(&f, &u, 4);
  } else {
    uint32_t u = (uint32_t(exp + 112) << 23) | (mant << 13);
    std::memcpy(&f, &u, 4);
  }
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= sign;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < 6.103515625e-05f) {                // subnormal range: multiples of 2^-24
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  uint32_t au;
  std::memcpy(&au, &a, 4);
  uint32_t mant = au & 0x7fffffu;
  int exp = int(au >> 23) - 127 + 15;
  uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // nearest even; may carry into exp
  return sign | uint16_t(h);
}

}  // namespace kt
