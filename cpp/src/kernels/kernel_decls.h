// Every kernel entry point, by tier. Each is defined in its own file under kernels/<isa>/.
#pragma once
#include "kt/kernels.h"

namespace kt {

#define KT_DECLARE_KERNEL(fmt_act_tile_isa)            \
  void gateup_##fmt_act_tile_isa(const GateUpArgs& a); \
  void down_##fmt_act_tile_isa(const DownArgs& a);

// generic: scalar reference twins
KT_DECLARE_KERNEL(bf16_f32_1x16__ref)
KT_DECLARE_KERNEL(int8pc_q8s_1x16__ref)
KT_DECLARE_KERNEL(int4g32_q8s_1x16__ref)
// avx2
KT_DECLARE_KERNEL(bf16_f32_4x16__avx2)
KT_DECLARE_KERNEL(int8pc_q8s_4x16__avx2)
KT_DECLARE_KERNEL(int4g32_q8s_4x16__avx2)
// avx512
KT_DECLARE_KERNEL(bf16_f32_4x16__avx512)
KT_DECLARE_KERNEL(int8pc_q8s_4x16__avx512)
KT_DECLARE_KERNEL(int4g32_q8s_4x16__avx512)
// avx512_vnni
KT_DECLARE_KERNEL(int8pc_q8u_8x16__avx512vnni)
KT_DECLARE_KERNEL(int4g32_q8s_4x16__avx512vnni)
// avx512_bf16
KT_DECLARE_KERNEL(bf16_bf16_8x16__avx512bf16)
// amx: the tile kernels (kernels/amx), and the same templates on the tile emulator (kernels/amx_emu)
KT_DECLARE_KERNEL(int8pc_q8u_32x16__amx)
KT_DECLARE_KERNEL(int8pc_q8u_32x16__amx_emu)
KT_DECLARE_KERNEL(int4g32_q8s_32x16__amx)
KT_DECLARE_KERNEL(int4g32_q8s_32x16__amx_emu)
KT_DECLARE_KERNEL(bf16_bf16_32x16__amx)
KT_DECLARE_KERNEL(bf16_bf16_32x16__amx_emu)

#undef KT_DECLARE_KERNEL

}  // namespace kt
