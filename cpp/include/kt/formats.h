// Weight formats described as data: one traits row per format (see format_registry.cpp).
// A format has two representations:
//   logical  QuantizedMatrix: quantized values in row-major [N, K] order plus scales (what the
//            reference quantizer produces and what tests decode independently);
//   packed   the kernel layout, built once at load by the format's packer, in panels of
//            kPanelN output channels with the scales inline (layouts drawn in each format's .cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kt {

constexpr int kPanelN = 16;  // output channels per packed panel (one zmm of fp32/int32 lanes)

enum class FormatId : int { bf16 = 0, int8_pc = 1, int4_g32 = 2 };
constexpr int kNumFormats = 3;

// Activation formats the kernels read (one row per token, K padded like the weights).
enum class ActFormat : int {
  f32 = 0,   // fp32 values
  bf16 = 1,  // bf16 values (pairs feed vdpbf16ps)
  q8s = 2,   // int8 q = round(x / s), s = amax/127 per row; plus int32 sums of q per 32-group
  q8u = 3,   // the same q stored as q + 128 (uint8), for vpdpbusd's unsigned operand
};
const char* act_format_name(ActFormat a);

enum class DType : int { f32 = 0, bf16 = 1, f16 = 2 };
size_t dtype_size(DType t);

// Logical quantized matrix. Which fields are used depends on the format:
//   bf16     values: N*K*2 bytes (bf16 bits, little endian)
//   int8_pc  values: N*K int8; scale: N fp32          w = scale[n] * q
//   int4_g32 values: N*K uint8 in [0,15]; group_scale, group_min: N*ceil(K/32) fp16 bits
//                                                      w = d[n,g] * q + m[n,g]
struct QuantizedMatrix {
  FormatId format = FormatId::bf16;
  int N = 0, K = 0;
  std::vector<uint8_t> values;
  std::vector<float> scale;
  std::vector<uint16_t> group_scale, group_min;
};

struct FormatTraits {
  FormatId id;
  const char* name;         // format id string, e.g. "int4_g32"
  const char* method;       // KTMoEWrapper method that selects it, e.g. "AMXINT4"
  int group;                // K values sharing one scale; 0 = one scale per output channel / none
  int k_align;              // packed K is padded to a multiple of this
  double bits_per_weight;   // packed, group scales included; per-channel extras (int8_pc: 64 bits
                            // of scale and compensation per output channel) are not
  // Reference quantizer: w is fp32 [N, K] row-major.
  void (*quantize_ref)(const float* w, int N, int K, QuantizedMatrix* out);
  // Reference dequantizer: out fp32 [N, K].
  void (*dequantize_ref)(const QuantizedMatrix& q, float* out);
  // Bytes of one packed panel (kPanelN channels) for a padded K.
  size_t (*panel_bytes)(int k_padded);
  // Packs rows [n0, n1) and columns [k0, k1) of q into dst (panels of kPanelN channels).
  // k0 must be a multiple of `group` (or of k_align when group is 0).
  void (*pack)(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
  // Dequantizes row n of a packed matrix with K columns (padded to Kp; data: its panels) into
  // out[0, K): pack's inverse followed by dequantize_ref, equal to it bit for bit.
  void (*unpack_row)(const uint8_t* data, int Kp, int n, int K, float* out);
};

const FormatTraits& format_traits(FormatId id);
const FormatTraits& format_by_name(const std::string& name);    // throws listing valid names
const FormatTraits& format_by_method(const std::string& method);  // throws listing valid methods
const std::vector<const FormatTraits*>& all_formats();

static inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Round half to even for |v| < 2^22, without a libm call (baseline x86-64 has no roundss, and
// nearbyintf is an out-of-line call there). Adding and removing 1.5 * 2^23 leaves the integer;
// without -ffast-math the compiler may not fold the pair away.
static inline float round_half_even(float v) {
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

// The q8 activation scale of a row whose largest |x| is amax: s = amax / 127, and
// q = round_half_even(x * inv) with inv = 127 / amax; where that overflows (amax below ~3.7e-37),
// q = round_half_even(x / s) instead (divide). An all-zero row has s = inv = 0.
struct Q8Scale {
  float s, inv;
  bool divide;
};
static inline Q8Scale q8_scale(float amax) {
  const float s = amax / 127.f;
  const float inv = s > 0.f ? 127.f / amax : 0.f;
  return {s, inv, __builtin_isinf(inv) != 0};
}

// A packed [N, K] slice: panels of kPanelN channels, each panel_bytes long.
struct PackedMatrix {
  int N = 0, K = 0;   // logical rows (output channels) and columns of the slice
  int Kp = 0;         // K padded to k_align
  int panels = 0;     // ceil(N / kPanelN)
  size_t panel_bytes = 0;
  uint8_t* data = nullptr;  // owned by the layer's weight arena
  size_t bytes() const { return panel_bytes * size_t(panels); }
};

// bf16 / fp16 bit conversions (round to nearest even; NaN stays NaN).
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace kt
