// The kernel, quantizer and activation-codec tables, best-first. Dispatch takes the first row (for
// the format) whose tier the active tier covers; a layer makes its choices once, when it is
// constructed. A tile row (min_m > 0) is paired with the best vector row below it, and the layer
// picks between the two per call and per expert bucket by its token count.
#include <stdexcept>
#include <string>

#include "formats/format_impl.h"
#include "kernels/kernel_decls.h"

namespace kt {

// Why 16 tokens per expert (kAmxTileMinM). No AMX hardware was at hand, so the figure comes from
// Intel's documented throughput (Intel 64 and IA-32 Architectures Optimization Reference Manual,
// the Intel AMX chapter, Sapphire Rapids: one TDPB*D / TDPBF16PS per 16 cycles per core, i.e.
// 16x16x64 = 16384 int8 MACs per 16 cycles = 1024 MACs/cycle, 512 bf16 MACs/cycle; TILELOADD of
// 16 x 64 bytes at the 2 loads/cycle of the core, about 8 cycles) and the AVX512 rate (vpdpbusd
// and vdpbf16ps zmm: 2 per cycle on ports 0 and 5, 128 int8 / 64 bf16 MACs per cycle).
// Per 16 output channels and 64 k (int8; 32 k for bf16), with m token rows:
//   vector  16 m vpdpbusd / 2 per cycle                    =  8 m cycles
//   tiles   ceil(m/16) tdp x 16 cycles (+ one 1 KiB B-tile load of ~8 cycles that overlaps)
//           = 16 cycles for m <= 16
// so the tiles win on arithmetic from m = 3. They pay costs the vector kernels do not: a tile
// configuration per call, the token rows gathered into a zero-padded scratch, and an epilogue
// through memory (C tiles stored, then scaled with AVX512), about 2 x 16 cycles per 16x16 C tile,
// once per K for int8/bf16 (6% of the 512 tdp cycles at K=2048) but once per 32-k group for
// int4_g32 (its scales are per group): there a group costs ~16 (tdp) + 16 (store C) + 16
// (epilogue) + 8 (nibble unpacking) = ~56 cycles for up to 16 rows against ~5 m cycles for the
// vector kernel, even at m = 11. Below about 16 rows a bucket is also bound by the weight
// bandwidth on either path (decode), where the vector kernel, which reads each weight once with no
// staging, cannot lose. One full A tile (m = 16) is where every format is past its break-even with
// a margin: 8x the vector arithmetic for int8/bf16, ~1.4x for int4.

#define KT_ROW(fmt, tier, act, tile_isa)                                                               \
  KernelRow {                                                                                          \
    FormatId::fmt, IsaTier::tier, ActFormat::act, "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa, \
        /*min_m=*/0                                                                                    \
  }
#define KT_TILE_ROW(fmt, tier, act, tile_isa)                                                          \
  KernelRow {                                                                                          \
    FormatId::fmt, IsaTier::tier, ActFormat::act, "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa, \
        kAmxTileMinM                                                                                   \
  }

const std::vector<KernelRow>& kernel_table() {
  static const std::vector<KernelRow> table = {
      KT_TILE_ROW(int8_pc, amx, q8u, int8pc_q8u_32x16__amx),
      KT_TILE_ROW(int4_g32, amx, q8s, int4g32_q8s_32x16__amx),
      KT_TILE_ROW(bf16, amx, bf16, bf16_bf16_32x16__amx),
      KT_ROW(bf16, avx512_bf16, bf16, bf16_bf16_8x16__avx512bf16),
      KT_ROW(int8_pc, avx512_vnni, q8u, int8pc_q8u_8x16__avx512vnni),
      KT_ROW(int4_g32, avx512_vnni, q8s, int4g32_q8s_4x16__avx512vnni),
      KT_ROW(bf16, avx512, f32, bf16_f32_4x16__avx512),
      KT_ROW(int8_pc, avx512, q8s, int8pc_q8s_4x16__avx512),
      KT_ROW(int4_g32, avx512, q8s, int4g32_q8s_4x16__avx512),
      KT_ROW(bf16, avx2, f32, bf16_f32_4x16__avx2),
      KT_ROW(int8_pc, avx2, q8s, int8pc_q8s_4x16__avx2),
      KT_ROW(int4_g32, avx2, q8s, int4g32_q8s_4x16__avx2),
      KT_ROW(bf16, generic, f32, bf16_f32_1x16__ref),
      KT_ROW(int8_pc, generic, q8s, int8pc_q8s_1x16__ref),
      KT_ROW(int4_g32, generic, q8s, int4g32_q8s_1x16__ref),
  };
  return table;
}

const std::vector<KernelRow>& emulated_kernel_table() {
  static const std::vector<KernelRow> table = {
      KT_TILE_ROW(int8_pc, amx, q8u, int8pc_q8u_32x16__amx_emu),
      KT_TILE_ROW(int4_g32, amx, q8s, int4g32_q8s_32x16__amx_emu),
      KT_TILE_ROW(bf16, amx, bf16, bf16_bf16_32x16__amx_emu),
  };
  return table;
}

#undef KT_ROW
#undef KT_TILE_ROW

namespace {

// Sizes the logical arrays (as the reference does), then runs an ISA kernel on their storage.
template <void (*Kernel)(const float*, int, int, uint8_t*, uint16_t*, uint16_t*)>
void quantize_int4g32_into(const float* w, int N, int K, QuantizedMatrix* out) {
  int4g32_shape(N, K, out);
  Kernel(w, N, K, out->values.data(), out->group_scale.data(), out->group_min.data());
}

template <void (*Kernel)(const float*, int, int, int8_t*, float*)>
void quantize_int8pc_into(const float* w, int N, int K, QuantizedMatrix* out) {
  int8pc_shape(N, K, out);
  Kernel(w, N, K, reinterpret_cast<int8_t*>(out->values.data()), out->scale.data());
}

}  // namespace

#define KT_QROW(fmt, tier, fn, ...) QuantizerRow { FormatId::fmt, IsaTier::tier, #fn, __VA_ARGS__ }

const std::vector<QuantizerRow>& quantizer_table() {
  static const std::vector<QuantizerRow> table = {
      KT_QROW(int4_g32, avx512, quantize_int4g32_16g__avx512, quantize_int4g32_into<quantize_int4g32_16g__avx512>),
      KT_QROW(int8_pc, avx512, quantize_int8pc_16k__avx512, quantize_int8pc_into<quantize_int8pc_16k__avx512>),
      KT_QROW(int4_g32, avx2, quantize_int4g32_8g__avx2, quantize_int4g32_into<quantize_int4g32_8g__avx2>),
      KT_QROW(int8_pc, avx2, quantize_int8pc_8k__avx2, quantize_int8pc_into<quantize_int8pc_8k__avx2>),
      KT_QROW(bf16, generic, bf16_quantize_ref, bf16_quantize_ref),
      KT_QROW(int8_pc, generic, int8pc_quantize_ref, int8pc_quantize_ref),
      KT_QROW(int4_g32, generic, int4g32_quantize_ref, int4g32_quantize_ref),
  };
  return table;
}

#undef KT_QROW

const std::vector<ActCodecRow>& act_codec_table() {
  static const std::vector<ActCodecRow> table = {
      {IsaTier::avx512, "act_16__avx512", quantize_act_16__avx512, widen_16__avx512, round_bf16_16__avx512},
      {IsaTier::avx2, "act_8__avx2", quantize_act_8__avx2, widen_8__avx2, round_bf16_8__avx2},
      {IsaTier::generic, "act_ref", quantize_act_row, widen_row_ref, round_bf16_row_ref},
  };
  return table;
}

const ActCodecRow& select_act_codec(IsaTier tier) {
  for (const ActCodecRow& row : act_codec_table())
    if (static_cast<int>(row.tier) <= static_cast<int>(tier)) return row;
  throw std::logic_error("no activation codec");
}

const QuantizerRow& select_quantizer(FormatId format, IsaTier tier) {
  for (const QuantizerRow& row : quantizer_table())
    if (row.format == format && static_cast<int>(row.tier) <= static_cast<int>(tier)) return row;
  throw std::logic_error(std::string("no quantizer for format ") + format_traits(format).name);
}

const KernelRow& select_kernel(FormatId format, IsaTier tier) {
  for (const KernelRow& row : kernel_table())
    if (row.format == format && static_cast<int>(row.tier) <= static_cast<int>(tier)) return row;
  throw std::logic_error(std::string("no kernel for format ") + format_traits(format).name);
}

const KernelRow& select_vector_kernel(FormatId format, IsaTier tier) {
  for (const KernelRow& row : kernel_table())
    if (row.format == format && row.min_m == 0 && static_cast<int>(row.tier) <= static_cast<int>(tier)) return row;
  throw std::logic_error(std::string("no vector kernel for format ") + format_traits(format).name);
}

const KernelRow& select_emulated_kernel(FormatId format, IsaTier tier) {
  for (const KernelRow& row : emulated_kernel_table())
    if (row.format == format) return row;
  return select_kernel(format, tier);
}

}  // namespace kt
