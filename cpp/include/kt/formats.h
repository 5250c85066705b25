// Weight formats described as data: one record per format in format_registry.cpp, the single
// source of truth for C++ and Python (kt_kernel._ext.formats() returns the same records).
// A format has two representations:
//   logical  QuantizedMatrix: the format's arrays (FormatTraits::arrays), quantized values in
//            row-major [N, K] order plus per-row or per-group scales (what the reference quantizer
//            produces, what a converted checkpoint stores, what tests decode independently);
//   packed   the kernel layout, built once at load by the format's packer: panels of kPanelN
//            output channels, each Kp / k_align blocks (kt/format_blocks.h) and a panel tail.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kt/format_blocks.h"

namespace kt {

// The weight formats, in record order. Adding a format adds its id here and its record in
// format_registry.cpp (docs/adding_a_format.md). Ours first, then the GGUF types (ggml spellings):
// q8_0, f16, f32, then the legacy types q4_0 q4_1 q5_0 q5_1 iq4_nl, then q2_K q3_K q4_K q5_K q6_K iq4_xs,
// then mxfp4 (method MXFP4 and a GGUF type), then int4_g32_zp (no method of its own: the int4
// release methods load asymmetric releases into it).
#define KT_FORMAT_IDS(X) \
  X(bf16) X(int8_pc) X(int4_g32) X(fp8_g128) \
  X(q8_0) X(f16) X(f32) \
  X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(iq4_nl) \
  X(q2_K) X(q3_K) X(q4_K) X(q5_K) X(q6_K) X(iq4_xs) \
  X(mxfp4) X(int4_g32_zp)

// The method of every GGUF format: KTMoEWrapper(method="LLAMAFILE") takes each projection's format
// from the GGUF file's tensor types (any format with a gguf_type, bf16 included).
constexpr const char* kGgufMethod = "LLAMAFILE";

enum class FormatId : int {
#define KT_FORMAT_ENUMERATOR(id) id,
  KT_FORMAT_IDS(KT_FORMAT_ENUMERATOR)
#undef KT_FORMAT_ENUMERATOR
};
#define KT_FORMAT_ONE(id) +1
constexpr int kNumFormats = 0 KT_FORMAT_IDS(KT_FORMAT_ONE);
#undef KT_FORMAT_ONE

// Activation formats the kernels read (one row per token, K padded like the weights).
enum class ActFormat : int {
  f32 = 0,   // fp32 values
  bf16 = 1,  // bf16 values (pairs feed vdpbf16ps)
  q8s = 2,   // int8 q = round(x / s), s = amax/127 per row; plus int32 sums of q per kQ8Group k
  q8u = 3,   // the same q stored as q + 128 (uint8), for vpdpbusd's unsigned operand
  q8_32 = 4,   // blocks of 32 k (ActQ8x32, kt/gguf_blocks.h): q8s's rounding with one scale per block
  q8_256 = 5,  // blocks of 256 k (ActQ8x256): one scale per block, sums of q per 16
};
constexpr int kNumActFormats = 6;
const char* act_format_name(ActFormat a);
constexpr unsigned act_bit(ActFormat a) { return 1u << static_cast<int>(a); }

// q8s rows carry the sum of q over each group of kQ8Group k (the int4_g32 kernels apply the
// group minimum with it). Rows of sums are q8_gsum_stride(Kp) int32s apart: the Kp / kQ8Group
// sums of the whole groups and one spare.
constexpr int kQ8Group = 32;
constexpr int q8_gsum_stride(int Kp) { return Kp / kQ8Group + 1; }

enum class DType : int { f32 = 0, bf16 = 1, f16 = 2 };
size_t dtype_size(DType t);

// One array of a format's logical representation, as stored in memory and in a converted checkpoint.
enum class ArrayPer : int {
  value = 0,  // one element per weight: [N, K]
  row = 1,    // one per output channel: [N]
  group = 2,  // one per group of `group` k: [N, ceil(K / group)]
  block = 3,  // GGUF blocks, bytes: [N, K / group * (block_bytes / kPanelN)] (K a multiple of group)
};
struct FormatArray {
  const char* name;   // key of the logical array: quantize()'s dict, QuantizedMatrix::arrays order
  const char* part;   // its converted tensor: kt.layers.{L}.experts.{proj}.<part>
  const char* dtype;  // safetensors dtype of an element: BF16, I8, U8, F16, F32
  int file_bits;      // bits of an element in the converted file: 4 stores two per byte (even k in
                      // the low nibble), otherwise the dtype's width
  ArrayPer per;
};
constexpr int kMaxFormatArrays = 3;
// The element types format arrays use: safetensors name, bytes, numpy name (bf16 and fp16 held as
// their uint16 bits). Throws on a name not in the table.
struct ElementType {
  const char* safetensors;
  size_t bytes;
  const char* numpy;
};
const ElementType& element_type(const char* safetensors_dtype);

// Logical quantized matrix: arrays[i] holds the format's array i (FormatTraits::arrays[i]),
// elements of its dtype, row-major.
struct QuantizedMatrix {
  FormatId format = FormatId::bf16;
  int N = 0, K = 0;
  std::vector<uint8_t> arrays[kMaxFormatArrays];
  template <class T> T* array(int i) { return reinterpret_cast<T*>(arrays[i].data()); }
  template <class T> const T* array(int i) const { return reinterpret_cast<const T*>(arrays[i].data()); }
};

// Model-level agreement of a tiny model with its experts in this format against the fp32 model
// (kt_kernel.models.compare): mean KL at most kl_mean, top-1 agreement at least top1; a decoded
// token may differ from the reference's argmax only where the reference's top-2 gap is below tie_margin.
struct AgreementBounds {
  double kl_mean, top1, tie_margin;
};

struct FormatTraits {
  FormatId id;
  const char* name;    // format id string, e.g. "int4_g32"
  const char* method;  // KTMoEWrapper method that selects it, e.g. "AMXINT4"; "" for a format that
                       // only a checkpoint reader chooses (int4_g32_zp: asymmetric int4 releases)
  const char* quant_method;  // the converter's name for it (convert_cpu_weights.py --quant-method), e.g. "int4"
  int group;           // K values sharing one scale; 0 = one scale per output channel / none
  // Packed geometry: a panel is Kp / k_align blocks of block_bytes (Kp = K padded to k_align, the
  // k of one block), then panel_tail_bytes. All three come from the format's structs in
  // kt/format_blocks.h.
  int k_align;
  int block_bytes;
  int panel_tail_bytes;
  FormatArray arrays[kMaxFormatArrays];  // the logical arrays, unused entries null
  unsigned acts;                         // act_bit() of each activation format its kernels read
  bool int_dot;  // its kernels multiply integers (counted in GOP/s, bounded by the int8 dot peaks)
  // Error bounds. weight_rel_err bounds the quantizer alone: ||W x - deq(W) x|| / ||W x|| for
  // Gaussian W [256, 2048] and x; layer_rel_err bounds a MoE layer's output against the fp32
  // layer on the original weights (normal(0, 1/fan_in) weights, normal(0, 1) activations).
  double weight_rel_err;
  double layer_rel_err;
  AgreementBounds agreement;
  // Reference quantizer: w is fp32 [N, K] row-major.
  void (*quantize_ref)(const float* w, int N, int K, QuantizedMatrix* out);
  // Reference dequantizer: out fp32 [N, K].
  void (*dequantize_ref)(const QuantizedMatrix& q, float* out);
  // Packs rows [n0, n1) and columns [k0, k1) of q into dst (panels of kPanelN channels).
  // k0 must be a multiple of k_step().
  void (*pack)(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst);
  // Dequantizes row n of a packed matrix with K columns (padded to Kp; data: its panels) into
  // out[0, K): pack's inverse followed by dequantize_ref, equal to it bit for bit.
  void (*unpack_row)(const uint8_t* data, int Kp, int n, int K, float* out);
  // The ggml type id of the GGUF tensors that hold this format as it is (a GGUF file's experts of
  // that type load without conversion), -1 for none.
  int gguf_type = -1;
  // Throws std::invalid_argument naming the first value no kernel may read (a NaN code, a
  // non-finite scale) in logical arrays that were stored, not quantized here; nullptr: none can be.
  void (*check)(const QuantizedMatrix& q) = nullptr;

  int k_step() const { return group ? group : k_align; }  // where a packed slice of K may start
  // GGUF blocks cannot be padded: K must be a multiple of the block (k_align).
  bool whole_blocks() const { return arrays[0].per == ArrayPer::block; }
  int num_arrays() const {
    int n = 0;
    while (n < kMaxFormatArrays && arrays[n].name) ++n;
    return n;
  }
  size_t panel_bytes(int k_padded) const { return size_t(k_padded / k_align) * block_bytes + panel_tail_bytes; }
  // Packed, group scales included; panel tails (int8_pc: 64 bits of scale and compensation per
  // output channel) are not.
  double bits_per_weight() const { return block_bytes * 8.0 / (kPanelN * k_align); }
  // Elements of array i for a [N, K] matrix, and per row.
  size_t array_row_elems(int i, int K) const {
    switch (arrays[i].per) {
      case ArrayPer::value: return size_t(K);
      case ArrayPer::row: return 1;
      case ArrayPer::group: return size_t((K + group - 1) / group);
      case ArrayPer::block: return size_t(K / group) * size_t(block_bytes / kPanelN);
    }
    return 0;
  }
};

const FormatTraits& format_traits(FormatId id);
const FormatTraits& format_by_name(const std::string& name);    // throws listing valid names
const FormatTraits& format_by_method(const std::string& method);  // throws listing valid methods
const std::vector<const FormatTraits*>& all_formats();
// Sizes out's arrays for a [N, K] matrix of format f (contents unspecified) and sets format, N, K.
void shape_quantized(const FormatTraits& f, int N, int K, QuantizedMatrix* out);

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
