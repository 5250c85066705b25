// Entry points of each format file, gathered for the traits table.
#pragma once
#include "kt/formats.h"

namespace kt {

void bf16_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void bf16_dequantize_ref(const QuantizedMatrix& q, float* out);
size_t bf16_panel_bytes(int k_padded);
void bf16_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void bf16_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

void int8pc_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void int8pc_shape(int N, int K, QuantizedMatrix* out);  // format, N, K and array sizes of the output
void int8pc_dequantize_ref(const QuantizedMatrix& q, float* out);
size_t int8pc_panel_bytes(int k_padded);
void int8pc_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void int8pc_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

void int4g32_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out);
void int4g32_shape(int N, int K, QuantizedMatrix* out);  // format, N, K and array sizes of the output
void int4g32_dequantize_ref(const QuantizedMatrix& q, float* out);
size_t int4g32_panel_bytes(int k_padded);
void int4g32_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
void int4g32_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out);

}  // namespace kt
