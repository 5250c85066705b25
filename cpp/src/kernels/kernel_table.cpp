// The kernel, quantizer and activation-codec tables, best-first. The kernel rows come from the
// kernel files (KT_KERNEL_ROW and co., kernels/kernel_registry.h). Dispatch takes the first row (for
// the format) whose needs the active feature set covers; a layer makes its choices once, when it
// is constructed. A tile row (min_m > 0) is paired with the best vector row below it, and the
// layer picks between the two per call and per expert bucket by its token count.
#include <algorithm>
#include <bit>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>

#include "formats/format_impl.h"
#include "kernels/kernel_decls.h"
#include "kernels/kernel_registry.h"
#include "kernels/isa_tiers.h"

// The rows the kernel files registered (kernels/kernel_registry.h), bounded by the linker.
extern "C" {
[[gnu::visibility("hidden")]] extern const kt::KernelRow* const __start_kt_kernel_rows[];
[[gnu::visibility("hidden")]] extern const kt::KernelRow* const __stop_kt_kernel_rows[];
// weak: the emulated rows (kernels/amx_emu, x86 only) are an empty section elsewhere, which the
// linker does not create; both symbols are then null and the table empty
[[gnu::visibility("hidden"), gnu::weak]] extern const kt::KernelRow* const __start_kt_emulated_kernel_rows[];
[[gnu::visibility("hidden"), gnu::weak]] extern const kt::KernelRow* const __stop_kt_emulated_kernel_rows[];
[[gnu::visibility("hidden")]] extern const kt::QuantizerRow* const __start_kt_reference_quantizer_rows[];
[[gnu::visibility("hidden")]] extern const kt::QuantizerRow* const __stop_kt_reference_quantizer_rows[];
}

namespace kt {

namespace {

// Best first: the higher tier (row_tier), then the row needing more features within a tier (an
// AVX-VNNI row above the plain AVX2 row of its tier), then a tile row above a vector row of the
// same needs (they pair: the tile row takes the buckets of min_m tokens and more, the vector row
// the others), then a fixed key: the lower feature bits, the format id, the name. Names are unique
// (checked), so the order is total and does not depend on the order in which the linker placed
// the objects.
bool better_row(const KernelRow& a, const KernelRow& b) {
  const auto key = [](const KernelRow& r) {
    return std::make_tuple(-static_cast<int>(row_tier(r.needs)), -std::popcount(r.needs), r.needs, r.min_m == 0,
                           static_cast<int>(r.format), std::string_view(r.name));
  };
  return key(a) < key(b);
}

std::vector<KernelRow> sorted_rows(const KernelRow* const* begin, const KernelRow* const* end) {
  std::vector<KernelRow> rows;
  std::set<std::string_view> names;
  for (const KernelRow* const* entry = begin; entry != end; ++entry) {
    if (!names.insert((*entry)->name).second)
      throw std::logic_error(std::string("two kernel rows named ") + (*entry)->name);
    rows.push_back(**entry);
  }
  std::sort(rows.begin(), rows.end(), better_row);
  return rows;
}

}  // namespace

const std::vector<KernelRow>& kernel_table() {
  static const std::vector<KernelRow> table = sorted_rows(__start_kt_kernel_rows, __stop_kt_kernel_rows);
  return table;
}

const std::vector<KernelRow>& emulated_kernel_table() {
  static const std::vector<KernelRow> table =
      sorted_rows(__start_kt_emulated_kernel_rows, __stop_kt_emulated_kernel_rows);
  return table;
}

namespace {

// Sizes the logical arrays (as the reference does), then runs an ISA kernel on their storage.
template <void (*Kernel)(const float*, int, int, uint8_t*, uint16_t*, uint16_t*)>
void quantize_int4g32_into(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::int4_g32), N, K, out);
  Kernel(w, N, K, out->array<uint8_t>(kInt4G32Values), out->array<uint16_t>(kInt4G32Scale),
         out->array<uint16_t>(kInt4G32Min));
}

template <void (*Kernel)(const float*, int, int, int8_t*, float*)>
void quantize_int8pc_into(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::int8_pc), N, K, out);
  Kernel(w, N, K, out->array<int8_t>(kInt8PcValues), out->array<float>(kInt8PcScale));
}

}  // namespace

#define KT_QROW(fmt, needs, fn, ...) QuantizerRow { FormatId::fmt, needs, #fn, __VA_ARGS__ }

// The ISA quantizers, best-first, then the formats' reference quantizers (registered in the
// format files) in format order.
const std::vector<QuantizerRow>& quantizer_table() {
  static const std::vector<QuantizerRow> table = [] {
    std::vector<QuantizerRow> rows = {
#if KT_X86_TIERS  // the x86 tiers' files are built on x86 only (CMakeLists.txt)
        KT_QROW(int4_g32, kAvx512Obj, quantize_int4g32_16g__avx512, quantize_int4g32_into<quantize_int4g32_16g__avx512>),
        KT_QROW(int8_pc, kAvx512Obj, quantize_int8pc_16k__avx512, quantize_int8pc_into<quantize_int8pc_16k__avx512>),
        KT_QROW(int4_g32, kAvx2Obj, quantize_int4g32_8g__avx2, quantize_int4g32_into<quantize_int4g32_8g__avx2>),
        KT_QROW(int8_pc, kAvx2Obj, quantize_int8pc_8k__avx2, quantize_int8pc_into<quantize_int8pc_8k__avx2>),
#endif
    };
    std::vector<QuantizerRow> reference;
    for (const QuantizerRow* const* entry = __start_kt_reference_quantizer_rows;
         entry != __stop_kt_reference_quantizer_rows; ++entry)
      reference.push_back(**entry);
    std::sort(reference.begin(), reference.end(),
              [](const QuantizerRow& a, const QuantizerRow& b) { return a.format < b.format; });
    for (size_t i = 1; i < reference.size(); ++i)
      if (reference[i].format == reference[i - 1].format)
        throw std::logic_error(std::string("two reference quantizers for format ") + format_traits(reference[i].format).name);
    rows.insert(rows.end(), reference.begin(), reference.end());
    return rows;
  }();
  return table;
}

#undef KT_QROW

const std::vector<ActCodecRow>& act_codec_table() {
  static const std::vector<ActCodecRow> table = {
#if KT_X86_TIERS
      {kAvx512Obj, "act_16__avx512", quantize_act_16__avx512, widen_16__avx512, round_bf16_16__avx512},
      {kAvx2Obj, "act_8__avx2", quantize_act_8__avx2, widen_8__avx2, round_bf16_8__avx2},
#endif
      {kRef, "act_ref", quantize_act_row, widen_row_ref, round_bf16_row_ref},
  };
  return table;
}

const ActCodecRow& select_act_codec(FeatureSet have) {
  for (const ActCodecRow& row : act_codec_table())
    if (covers(have, row.needs)) return row;
  throw std::logic_error("no activation codec");
}

const QuantizerRow& select_quantizer(FormatId format, FeatureSet have) {
  for (const QuantizerRow& row : quantizer_table())
    if (row.format == format && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no quantizer for format ") + format_traits(format).name);
}

const KernelRow& select_kernel(FormatId format, FeatureSet have) {
  for (const std::vector<KernelRow>* table : {&emulated_kernel_table(), &kernel_table()})
    for (const KernelRow& row : *table)
      if (row.format == format && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no kernel for format ") + format_traits(format).name);
}

const KernelRow& select_vector_kernel(FormatId format, FeatureSet have) {
  for (const KernelRow& row : kernel_table())
    if (row.format == format && row.min_m == 0 && covers(have, row.needs)) return row;
  throw std::logic_error(std::string("no vector kernel for format ") + format_traits(format).name);
}

void pack_for(const KernelRow& row, const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  if (row.layout) row.layout->pack(q, n0, n1, k0, k1, dst);
  else format_traits(row.format).pack(q, n0, n1, k0, k1, dst);
}

void unpack_row_for(const KernelRow& row, const uint8_t* data, int Kp, int n, int K, float* out) {
  if (row.layout) row.layout->unpack_row(data, Kp, n, K, out);
  else format_traits(row.format).unpack_row(data, Kp, n, K, out);
}

IsaTier row_tier(FeatureSet needs) {
  if (needs & feature::amx_tile_emu) needs = (needs & ~feature::amx_tile_emu) | feature::amx_tile;
  // features no tier names (avx_vnni) do not place a row; a row needs x86 or ARM features, not both
  const FeatureSet arm = tier_features(IsaTier::sve);
  needs &= needs & arm ? arm : tier_features(IsaTier::amx);
  int t = 0;
  while (!covers(tier_features(static_cast<IsaTier>(t)), needs)) ++t;  // the amx or sve tier covers any masked set
  return static_cast<IsaTier>(t);
}

}  // namespace kt
