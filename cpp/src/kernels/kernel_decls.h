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

// Quantizer kernels: they write into arrays the caller has sized (kernel_table.cpp), so that no
// std::vector code is instantiated with ISA flags. Same results as the format's quantize_ref.
//   int4_g32: q [N, K] in 0..15, d and m [N, ceil(K/32)] fp16 bits
#define KT_DECLARE_QUANTIZE_INT4G32(lanes_isa) \
  void quantize_int4g32_##lanes_isa(const float* w, int N, int K, uint8_t* q, uint16_t* d, uint16_t* m);
//   int8_pc: q [N, K] in -127..127, scale [N]
#define KT_DECLARE_QUANTIZE_INT8PC(lanes_isa) \
  void quantize_int8pc_##lanes_isa(const float* w, int N, int K, int8_t* q, float* scale);

KT_DECLARE_QUANTIZE_INT4G32(8g__avx2)
KT_DECLARE_QUANTIZE_INT4G32(16g__avx512)
KT_DECLARE_QUANTIZE_INT8PC(8k__avx2)
KT_DECLARE_QUANTIZE_INT8PC(16k__avx512)

#undef KT_DECLARE_QUANTIZE_INT4G32
#undef KT_DECLARE_QUANTIZE_INT8PC

// Activation codecs (ActCodecRow's functions), the same results as the reference's.
#define KT_DECLARE_ACT_CODEC(lanes_isa)                                                                 \
  bool quantize_act_##lanes_isa(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale, \
                                int32_t* gsum);                                                         \
  void widen_##lanes_isa(DType dtype, const uint16_t* x, int n, float* out);                            \
  void round_bf16_##lanes_isa(const float* x, int n, uint16_t* out);

KT_DECLARE_ACT_CODEC(8__avx2)
KT_DECLARE_ACT_CODEC(16__avx512)

#undef KT_DECLARE_ACT_CODEC

}  // namespace kt
