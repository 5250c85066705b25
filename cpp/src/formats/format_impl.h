// Entry points of each format file, gathered for the records of format_registry.cpp.
#pragma once
#include "kt/formats.h"

namespace kt {

void bf16_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void bf16_dequantize_ref(const QuantizedMatrix& q, float* out);
void bf16_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void bf16_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

// int8_pc arrays: values int8 [N, K], scale fp32 [N]
enum Int8PcArray { kInt8PcValues = 0, kInt8PcScale = 1 };
void int8pc_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void int8pc_dequantize_ref(const QuantizedMatrix& q, float* out);
void int8pc_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void int8pc_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

// int4_g32 arrays: values uint8 [N, K] in 0..15, group_scale and group_min fp16 bits [N, ceil(K/32)]
enum Int4G32Array { kInt4G32Values = 0, kInt4G32Scale = 1, kInt4G32Min = 2 };
void int4g32_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void int4g32_dequantize_ref(const QuantizedMatrix& q, float* out);
void int4g32_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void int4g32_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

// int4_g32_zp arrays: values uint8 [N, K] in 0..15, group_scale fp16 bits and group_zero uint8
// [N, ceil(K/32)]; packed as int4_g32 (values and scale at int4_g32's indices)
constexpr int kInt4G32ZpZero = 2;
void int4g32zp_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void int4g32zp_dequantize_ref(const QuantizedMatrix& q, float* out);
void int4g32zp_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void int4g32zp_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);
void int4g32zp_check(const QuantizedMatrix& q);

// fp8_g128 arrays: values e4m3 bytes [N, K], scale fp32 [N, ceil(K/128)]
enum Fp8G128Array { kFp8G128Values = 0, kFp8G128Scale = 1 };
void fp8g128_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void fp8g128_dequantize_ref(const QuantizedMatrix& q, float* out);
void fp8g128_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void fp8g128_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);
void fp8g128_check(const QuantizedMatrix& q);
// e4m3 (torch.float8_e4m3fn): the value of each of the 256 bytes (NaN for 0x7f, 0xff), and the
// byte nearest to v (ties to even; |v| above 448 gives 448)
const float* e4m3_values();
uint8_t f32_to_e4m3(float v);

// GGUF formats (gguf_format.h): the record functions KT_GGUF_FORMAT defines in each type's file.
#define KT_FORMAT_RECORD_FUNCTIONS(fmt)                                              \
  void fmt##_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);       \
  void fmt##_dequantize_ref(const QuantizedMatrix& q, float* out);                   \
  void fmt##_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst); \
  void fmt##_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);
KT_FORMAT_RECORD_FUNCTIONS(q8_0)
// f16, f32 arrays: values [N, K] (fp16 bits, fp32)
KT_FORMAT_RECORD_FUNCTIONS(f16)
KT_FORMAT_RECORD_FUNCTIONS(f32)
KT_FORMAT_RECORD_FUNCTIONS(q4_0)
KT_FORMAT_RECORD_FUNCTIONS(q4_1)
KT_FORMAT_RECORD_FUNCTIONS(q5_0)
KT_FORMAT_RECORD_FUNCTIONS(q5_1)
KT_FORMAT_RECORD_FUNCTIONS(iq4_nl)
KT_FORMAT_RECORD_FUNCTIONS(q2_K)
KT_FORMAT_RECORD_FUNCTIONS(q3_K)
KT_FORMAT_RECORD_FUNCTIONS(q4_K)
KT_FORMAT_RECORD_FUNCTIONS(q5_K)
KT_FORMAT_RECORD_FUNCTIONS(q6_K)
KT_FORMAT_RECORD_FUNCTIONS(iq4_xs)
KT_FORMAT_RECORD_FUNCTIONS(mxfp4)
void mxfp4_check(const QuantizedMatrix& q);
#undef KT_FORMAT_RECORD_FUNCTIONS

}  // namespace kt
