// The ISA quantizers and activation codecs, for their rows in kernel_table.cpp. Each is defined in
// its own file under kernels/<isa>/; the gemm kernels register their own rows (kernel_registry.h).
#pragma once
#include "kt/kernels.h"

namespace kt {

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
