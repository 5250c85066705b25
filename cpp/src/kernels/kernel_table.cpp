// The kernel and quantizer tables, best-first. Dispatch takes the first row for the format whose
// tier the active tier covers; a layer makes both choices once, when it is constructed.
#include <stdexcept>
#include <string>

#include "formats/format_impl.h"
#include "kernels/kernel_decls.h"

namespace kt {

#define KT_ROW(fmt, tier, act, tile_isa) \
  KernelRow { FormatId::fmt, IsaTier::tier, ActFormat::act, "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa }

const std::vector<KernelRow>& kernel_table() {
  static const std::vector<KernelRow> table = {
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

#undef KT_ROW

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

}  // namespace kt
