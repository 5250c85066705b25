// The kernel table, best-first. Dispatch takes the first row for the format whose tier the
// active tier covers; the choice is made once per layer, when its weights load.
#include <stdexcept>
#include <string>

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

const KernelRow& select_kernel(FormatId format, IsaTier tier) {
  for (const KernelRow& row : kernel_table())
    if (row.format == format && static_cast<int>(row.tier) <= static_cast<int>(tier)) return row;
  throw std::logic_error(std::string("no kernel for format ") + format_traits(format).name);
}

}  // namespace kt
