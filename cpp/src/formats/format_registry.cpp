// The traits table: one row per weight format. Adding a format = adding a row here and a file
// beside this one with its reference quantizer and packer.
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kt/formats.h"
#include "format_impl.h"

namespace kt {
namespace {

const FormatTraits kFormats[kNumFormats] = {
    {FormatId::bf16, "bf16", "BF16", 0, 2, 16.0, bf16_quantize_ref, bf16_dequantize_ref,
     bf16_panel_bytes, bf16_pack, bf16_unpack_row},
    {FormatId::int8_pc, "int8_pc", "AMXINT8", 0, 4, 8.0, int8pc_quantize_ref, int8pc_dequantize_ref,
     int8pc_panel_bytes, int8pc_pack, int8pc_unpack_row},
    {FormatId::int4_g32, "int4_g32", "AMXINT4", 32, 32, 5.0, int4g32_quantize_ref,
     int4g32_dequantize_ref, int4g32_panel_bytes, int4g32_pack, int4g32_unpack_row},
};

template <class Get>
std::string list_of(Get get) {
  std::string s;
  for (int i = 0; i < kNumFormats; ++i) s += std::string(i ? ", " : "") + get(kFormats[i]);
  return s;
}

}  // namespace

const char* act_format_name(ActFormat a) {
  static const char* names[] = {"f32", "bf16", "q8s", "q8u"};
  return names[static_cast<int>(a)];
}

size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

const FormatTraits& format_traits(FormatId id) { return kFormats[static_cast<int>(id)]; }

const FormatTraits& format_by_name(const std::string& name) {
  for (const auto& f : kFormats)
    if (name == f.name) return f;
  throw std::invalid_argument("unknown weight format '" + name + "'; valid formats: " +
                              list_of([](const FormatTraits& f) { return f.name; }));
}

const FormatTraits& format_by_method(const std::string& method) {
  for (const auto& f : kFormats)
    if (method == f.method) return f;
  throw std::invalid_argument("unknown method '" + method + "'; valid methods: " +
                              list_of([](const FormatTraits& f) { return f.method; }));
}

const std::vector<const FormatTraits*>& all_formats() {
  static const std::vector<const FormatTraits*> v = [] {
    std::vector<const FormatTraits*> out;
    for (const auto& f : kFormats) out.push_back(&f);
    return out;
  }();
  return v;
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                           // round to nearest even
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    uint32_t u = 0x7f800000u | (mant << 13);
    std::memcpy(&f, &u, 4);
  } else {
    uint32_t u = (uint32_t(exp + 112) << 23) | (mant << 13);
    std::memcpy(&f, &u, 4);
  }
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= sign;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < 6.103515625e-05f) {                // subnormal range: multiples of 2^-24
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  uint32_t au;
  std::memcpy(&au, &a, 4);
  uint32_t mant = au & 0x7fffffu;
  int exp = int(au >> 23) - 127 + 15;
  uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // nearest even; may carry into exp
  return sign | uint16_t(h);
}

}  // namespace kt
