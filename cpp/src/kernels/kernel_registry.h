// A kernel file registers its own rows: KT_KERNEL_ROW / KT_TILE_ROW (kernel_table) and
// KT_EMULATED_TILE_ROW (emulated_kernel_table), and a format file its reference quantizer
// (KT_REFERENCE_QUANTIZER_ROW), put a pointer to a constant row into a linker section, which kernel_table.cpp reads (the linker's __start_/__stop_ symbols) and sorts
// best-first. Constant data rather than a registrar object: a registrar's constructor would run at
// load time, on every CPU, code compiled with the kernel file's ISA flags. `constinit` makes the
// compiler prove that no code initializes the row; `used` keeps it although nothing names it.
#pragma once
#include "kt/kernels.h"

namespace kt {

// What a row needs: every feature its object's compile flags enable (CMakeLists.txt, KT_FLAGS_*
// and the per-list flags), not only those its intrinsics use, since the compiler may emit any
// instruction the flags allow. AMX instructions come only from intrinsics, so a tile row needs
// just the AMX features it calls (AMX-INT8 or AMX-BF16) besides its object's vector flags.
constexpr FeatureSet kRef = 0;
constexpr FeatureSet kAvx2Obj = feature::avx2;
constexpr FeatureSet kAvx512Obj = kAvx2Obj | feature::avx512;
constexpr FeatureSet kAvx512VnniObj = kAvx512Obj | feature::avx512_vnni;
constexpr FeatureSet kAvx512Bf16Obj = kAvx512VnniObj | feature::avx512_bf16;  // also the amx and amx_emu objects'
// aarch64 (kernels/neon, kernels/sve): the -march extensions of each list in CMakeLists.txt. The
// lists above neon build for armv8.2-a, whose other extensions (LSE, RDM) every CPU with dotprod has.
constexpr FeatureSet kNeonObj = feature::neon;
constexpr FeatureSet kDotprodObj = kNeonObj | feature::dotprod;
constexpr FeatureSet kI8mmObj = kDotprodObj | feature::i8mm;
constexpr FeatureSet kNeonBf16Obj = kI8mmObj | feature::arm_bf16;
constexpr FeatureSet kSveObj = kNeonBf16Obj | feature::sve;

// Tokens per expert from which a tile row runs (its min_m): where the tile kernel, timed against
// the vector kernel it is paired with for m rows per expert, starts to win (the timings:
// docs/benchmarks/notes.md, "kTileMinM"; the reasoning: docs/design.md, "min_m").
// Below about 8 rows every path streams the weights at the core's bandwidth and the vector
// kernels, with no staging, are as fast or faster. bf16 tiles win from 2 rows: vdpbf16ps runs at
// about one instruction per 2 cycles on this core, a tenth of tdpbf16ps. int4_g32 scales every
// 32-k group's C tile in fp32 (3 vector operations per row and group, about the vector kernel's
// cost per row without its 8 vpdpbusd), and its tile passes cover 16 rows: its tiles tie at 16
// rows, lose with a second, part-filled pass (17-20) and win from 24.
constexpr int kTileMinMBf16 = 2;
constexpr int kTileMinMInt8 = 8;
constexpr int kTileMinMInt4 = 24;

// The section names are C identifiers, for which the linker defines __start_<name>/__stop_<name>.
#define KT_REGISTER_ROW_(section_name, fmt, needs, act, tile_isa, min_m, layout)                             \
  constinit const KernelRow kt_row_##tile_isa{FormatId::fmt,         needs,           ActFormat::act,   \
                                              "gateup_" #tile_isa, gateup_##tile_isa, down_##tile_isa, \
                                              min_m,               layout};                            \
  [[gnu::used, gnu::section(section_name)]] constinit const KernelRow* const kt_row_entry_##tile_isa = &kt_row_##tile_isa;

// A vector kernel's row: gateup_<tile_isa> and down_<tile_isa>, defined above it in the same file.
#define KT_KERNEL_ROW(fmt, needs, act, tile_isa) \
  KT_REGISTER_ROW_("kt_kernel_rows", fmt, needs, act, tile_isa, 0, nullptr)
// A vector kernel's row that reads the packed layout `layout` (a PanelLayout, formats/).
#define KT_KERNEL_ROW_IN(fmt, needs, act, tile_isa, layout) \
  KT_REGISTER_ROW_("kt_kernel_rows", fmt, needs, act, tile_isa, 0, &layout)
#define KT_TILE_ROW(fmt, needs, act, tile_isa, min_m) \
  KT_REGISTER_ROW_("kt_kernel_rows", fmt, needs, act, tile_isa, min_m, nullptr)
#define KT_EMULATED_TILE_ROW(fmt, needs, act, tile_isa, min_m) \
  KT_REGISTER_ROW_("kt_emulated_kernel_rows", fmt, needs, act, tile_isa, min_m, nullptr)

// A format's reference quantizer (quantizer_table's generic row of the format), registered in the
// format's own file (cpp/src/formats/<format>.cpp) after its definition.
#define KT_REFERENCE_QUANTIZER_ROW(fmt, quantize_ref)                                                     \
  constinit const QuantizerRow kt_quantizer_row_##quantize_ref{FormatId::fmt, kRef, #quantize_ref,         \
                                                               quantize_ref};                              \
  [[gnu::used, gnu::section("kt_reference_quantizer_rows")]] constinit const QuantizerRow* const           \
      kt_quantizer_row_entry_##quantize_ref = &kt_quantizer_row_##quantize_ref;

}  // namespace kt
