// The kernel, quantizer and activation-codec tables, best-first. Dispatch takes the first row (for
// the format) whose needs the active feature set covers; a layer makes its choices once, when it
// is constructed. A tile row (min_m > 0) is paired with the best vector row below it, and the
// layer picks between the two per call and per expert bucket by its token count.
#include <stdexcept>
#include <string>

#include "formats/format_impl.h"
#include "kernels/kernel_decls.h"

namespace kt {

// Tokens per expert from which a tile row runs (its min_m): where the tile kernel, timed against
// the vector kernel it is paired with for m rows per expert, starts to win (the timings:
// docs/benchmarks/notes.md, "kTileMinM"; the reasoning: docs/design.md, "min_m").
// Below about 8 rows every path streams the weights at the core's bandwidth and the vector
// kernels, with no staging, are as fast or faster. bf16 tiles win from 2 rows: vdpbf16ps runs at
// about one instruction per 2 cycles on this core, a tenth of tdpbf16ps. int4_g32 scales every
// 32-k group's C tile in fp32 (3 vector operations per row and group, about the vector kernel's
// cost per row without its 8 vpdpbusd), and its tile passes cover 16 rows: its tiles tie at 16
// rows, lose with a second, part-filled pass (17-20) and win from 24.
constexpr int kTileMinMBf16 = 2;
constexpr int kTileMinMInt8 = 8;
constexpr int kTileMinMInt4 = 24;

// What a row needs: every feature its object's compile flags enable (CMakeLists.txt, KT_FLAGS_*
// and the per-list flags), not only those its intrinsics use, since the compiler may emit any
// instruction the flags allow. AMX instructions come only from intrinsics, so a tile row needs
// just the AMX features it calls (AMX-INT8 or AMX-BF16) besides its object's vector flags.
constexpr FeatureSet kRef = 0;
constexpr FeatureSet kAvx2Obj = feature::avx2;
constexpr FeatureSet kAvx512Obj = kAvx2Obj | feature::avx512;
constexpr FeatureSet kAvx512VnniObj = kAvx512Obj | feature::avx512_vnni;
constexpr FeatureSet kAvx512Bf16Obj = kAvx512VnniObj | feature::avx512_bf16;  // also the amx and amx_emu objects'

#define KT_ROW(fmt, needs, act, tile_isa)                                                              \
  KernelRow {                                                                                          \
    FormatId::fmt, needs, ActFormat::act, "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa,     \
        /*min_m=*/0                                                                                    \
  }
#define KT_TILE_ROW(fmt, needs, act, tile_isa, min_m)                                                  \
  KernelRow {                                                                                          \
    FormatId::fmt, needs, ActFormat::act, "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa,     \
        min_m                                                                                          \
  }

const std::vector<KernelRow>& kernel_table() {
  static const std::vector<KernelRow> table = {
      KT_TILE_ROW(int8_pc, kAvx512Bf16Obj | feature::amx_tile | feature::amx_int8, q8u, int8pc_q8u_32x16__amx, kTileMinMInt8),
      KT_TILE_ROW(int4_g32, kAvx512Bf16Obj | feature::amx_tile | feature::amx_int8, q8s, int4g32_q8s_32x16__amx, kTileMinMInt4),
      KT_TILE_ROW(bf16, kAvx512Bf16Obj | feature::amx_tile | feature::amx_bf16, bf16, bf16_bf16_32x16__amx, kTileMinMBf16),
      KT_ROW(bf16, kAvx512Bf16Obj, bf16, bf16_bf16_8x16__avx512bf16),
      KT_ROW(int8_pc, kAvx512VnniObj, q8u, int8pc_q8u_8x16__avx512vnni),
      KT_ROW(int4_g32, kAvx512VnniObj, q8s, int4g32_q8s_4x16__avx512vnni),
      KT_ROW(bf16, kAvx512Obj, f32, bf16_f32_4x16__avx512),
      KT_ROW(int8_pc, kAvx512Obj, q8s, int8pc_q8s_4x16__avx512),
      KT_ROW(int4_g32, kAvx512Obj, q8s, int4g32_q8s_4x16__avx512),
      KT_ROW(bf16, kAvx2Obj, f32, bf16_f32_4x16__avx2),
      KT_ROW(int8_pc, kAvx2Obj, q8s, int8pc_q8s_4x16__avx2),
      KT_ROW(int4_g32, kAvx2Obj, q8s, int4g32_q8s_4x16__avx2),
      KT_ROW(bf16, kRef, f32, bf16_f32_1x16__ref),
      KT_ROW(int8_pc, kRef, q8s, int8pc_q8s_1x16__ref),
      KT_ROW(int4_g32, kRef, q8s, int4g32_q8s_1x16__ref),
  };
  return table;
}

const std::vector<KernelRow>& emulated_kernel_table() {
  static const std::vector<KernelRow> table = {
      KT_TILE_ROW(int8_pc, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_int8, q8u, int8pc_q8u_32x16__amx_emu, kTileMinMInt8),
      KT_TILE_ROW(int4_g32, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_int8, q8s, int4g32_q8s_32x16__amx_emu, kTileMinMInt4),
      KT_TILE_ROW(bf16, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_bf16, bf16, bf16_bf16_32x16__amx_emu, kTileMinMBf16),
  };
  return table;
}

#undef KT_ROW
#undef KT_TILE_ROW

namespace {

// Sizes the logical arrays (as the reference does), then runs an ISA kernel on their storage.
template <void (*Kernel)(const float*, int, int, uint8_t*, uint16_t*, uint16_t*)>
void quantize_int4g32_into(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::int4_g32), N, K, out);
  Kernel(w, N, K, out->array<uint8_t>(kInt4G32Values), out->array<uint16_t>(kInt4G32Scale),
         out->array<uint16_t>(kInt4G32Min));
}

template <void (*Kernel)(const float*, int, int, int8_t*, float*)>
void quantize_int8pc_into(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::int8_pc), N, K, out);
  Kernel(w, N, K, out->array<int8_t>(kInt8PcValues), out->array<float>(kInt8PcScale));
}

}  // namespace

#define KT_QROW(fmt, needs, fn, ...) QuantizerRow { FormatId::fmt, needs, #fn, __VA_ARGS__ }

const std::vector<QuantizerRow>& quantizer_table() {
  static const std::vector<QuantizerRow> table = {
      KT_QROW(int4_g32, kAvx512Obj, quantize_int4g32_16g__avx512, quantize_int4g32_into<quantize_int4g32_16g__avx512>),
      KT_QROW(int8_pc, kAvx512Obj, quantize_int8pc_16k__avx512, quantize_int8pc_into<quantize_int8pc_16k__avx512>),
      KT_QROW(int4_g32, kAvx2Obj, quantize_int4g32_8g__avx2, quantize_int4g32_into<quantize_int4g32_8g__avx2>),
      KT_QROW(int8_pc, kAvx2Obj, quantize_int8pc_8k__avx2, quantize_int8pc_into<quantize_int8pc_8k__avx2>),
      KT_QROW(bf16, kRef, bf16_quantize_ref, bf16_quantize_ref),
      KT_QROW(int8_pc, kRef, int8pc_quantize_ref, int8pc_quantize_ref),
      KT_QROW(int4_g32, kRef, int4g32_quantize_ref, int4g32_quantize_ref),
  };
  return table;
}

#undef KT_QROW

const std::vector<ActCodecRow>& act_codec_table() {
  static const std::vector<ActCodecRow> table = {
      {kAvx512Obj, "act_16__avx512", quantize_act_16__avx512, widen_16__avx512, round_bf16_16__avx512},
      {kAvx2Obj, "act_8__avx2", quantize_act_8__avx2, widen_8__avx2, round_bf16_8__avx2},
      {kRef, "act_ref", quantize_act_row, widen_row_ref, round_bf16_row_ref},
  };
  return table;
}

const ActCodecRow& select_act_codec(FeatureSet have) {
  for (const ActCodecRow& row : act_codec_table())
    if (covers(have, row.needs)) return row;
  throw std::logic_error("no activation codec");
}

const QuantizerRow& select_quantizer(FormatId format, FeatureSet have) {
  for (const QuantizerRow& row : quantizer_table())
    if (row.format == format && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no quantizer for format ") + format_traits(format).name);
}

const KernelRow& select_kernel(FormatId format, FeatureSet have) {
  for (const std::vector<KernelRow>* table : {&emulated_kernel_table(), &kernel_table()})
    for (const KernelRow& row : *table)
      if (row.format == format && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no kernel for format ") + format_traits(format).name);
}

const KernelRow& select_vector_kernel(FormatId format, FeatureSet have) {
  for (const KernelRow& row : kernel_table())
    if (row.format == format && row.min_m == 0 && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no vector kernel for format ") + format_traits(format).name);
}

IsaTier row_tier(FeatureSet needs) {
  if (needs & feature::amx_tile_emu) needs = (needs & ~feature::amx_tile_emu) | feature::amx_tile;
  needs &= tier_features(IsaTier::amx);  // features no tier names (avx_vnni) do not place a row
  int t = 0;
  while (!covers(tier_features(static_cast<IsaTier>(t)), needs)) ++t;  // the amx tier covers any masked set
  return static_cast<IsaTier>(t);
}

}  // namespace kt
