// CPU features, the named feature sets users force (ISA tiers), and the set dispatch runs on.
// ISA-free: safe to include anywhere. Design: docs/cpu_features.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kt {

// A set of CPU features, one bit each. Kernel rows declare the set they need; dispatch takes the
// first row (best-first) whose set the active set covers.
using FeatureSet = uint32_t;

namespace feature {
// Each is detected on its own: CPUID bits, the register state the OS enables (XGETBV), and for
// AMX the Linux permission (arch_prctl). Feature bits are never inferred from one another.
constexpr FeatureSet avx2 = 1u << 0;         // AVX + AVX2 + FMA + F16C (what -mavx2 -mfma -mf16c allow), YMM state
constexpr FeatureSet avx_vnni = 1u << 1;     // AVX-VNNI: vpdpbusd on ymm (VEX encoded), YMM state
constexpr FeatureSet avx512 = 1u << 2;       // AVX512 F + BW + DQ + VL, ZMM and opmask state
constexpr FeatureSet avx512_vnni = 1u << 3;  // AVX512-VNNI, ZMM state
constexpr FeatureSet avx512_bf16 = 1u << 4;  // AVX512-BF16, ZMM state
constexpr FeatureSet amx_tile = 1u << 5;     // AMX-TILE on hardware: tile state + arch_prctl permission
constexpr FeatureSet amx_int8 = 1u << 6;     // AMX-INT8 (tdpbusd), with tile permission
constexpr FeatureSet amx_bf16 = 1u << 7;     // AMX-BF16 (tdpbf16ps), with tile permission
// Never detected: the tile instructions run on the software tile emulator (kernels/amx_emu), in
// place of amx_tile. Only the test-only "amx_emu" set has it.
constexpr FeatureSet amx_tile_emu = 1u << 8;
// aarch64, from the Linux HWCAP bits (what the CPU has and the kernel enables for user space)
constexpr FeatureSet neon = 1u << 9;       // Advanced SIMD (ASIMD), fp32 and int 128-bit vectors
constexpr FeatureSet dotprod = 1u << 10;   // SDOT/UDOT (FEAT_DotProd)
constexpr FeatureSet i8mm = 1u << 11;      // SMMLA/USMMLA/USDOT (FEAT_I8MM)
constexpr FeatureSet arm_bf16 = 1u << 12;  // BFDOT/BFMMLA/BFCVT (FEAT_BF16)
constexpr FeatureSet sve = 1u << 13;       // SVE, any vector length (read at run time)
constexpr int kCount = 14;
}  // namespace feature

constexpr bool covers(FeatureSet have, FeatureSet need) { return (have & need) == need; }
// Names in bit order ("avx2", "avx_vnni", ...); from_names throws std::invalid_argument on a
// name it does not know, listing the valid ones.
std::vector<std::string> feature_names(FeatureSet set);
FeatureSet features_from_names(const std::vector<std::string>& names);

// The named feature sets users force (KT_KERNEL_ISA, set_isa). Each one holds the features of
// the tiers before it, so they also order the sets: a CPU "runs" every tier its features cover.
enum class IsaTier : int {
  generic = 0,      // none: scalar reference kernels, any x86-64 or aarch64
  avx2 = 1,         // avx2
  avx512 = 2,       // + avx512
  avx512_vnni = 3,  // + avx512_vnni
  avx512_bf16 = 4,  // + avx512_bf16
  amx = 5,          // + amx_tile, amx_int8, amx_bf16
  // aarch64: disjoint from the x86 tiers' features, so an x86 CPU covers none of them and an ARM
  // CPU none of the x86 ones
  neon = 6,          // neon: every ARMv8-A CPU
  neon_dotprod = 7,  // + dotprod
  neon_i8mm = 8,     // + i8mm
  neon_bf16 = 9,     // + arm_bf16
  sve = 10,          // + sve
};
constexpr int kNumTiers = 11;

const char* tier_name(IsaTier t);
// Throws std::invalid_argument listing the valid names.
IsaTier tier_from_name(const std::string& name);
FeatureSet tier_features(IsaTier t);
// The last tier whose features `set` covers (generic covers any set).
IsaTier best_tier(FeatureSet set);

// Test-only named set, not a tier: the avx512_bf16 tier with the AMX instructions on the tile
// emulator (amx_tile_emu + amx_int8 + amx_bf16). It needs the avx512_bf16 tier on the host (the
// emulated kernels keep their AVX512 epilogues) and is never chosen automatically.
constexpr const char* kAmxEmuOverride = "amx_emu";
FeatureSet amx_emu_features();
// The name users see for a set dispatch runs on: "amx_emu" for the emulated one, otherwise its
// best tier's.
std::string isa_label(FeatureSet set);

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  int family = 0, model = 0;  // x86 display family and model (CPUID leaf 1); 0 elsewhere
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, avx_vnni = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_vnni = false, avx512_bf16 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // XCR0 state enabled by the OS
  bool amx_permitted = false;                                // arch_prctl(ARCH_REQ_XCOMP_PERM) granted
  // aarch64 (HWCAP / HWCAP2): NEON, SDOT/UDOT, SMMLA/USMMLA, BFDOT/BFMMLA, SVE and SVE2 with the
  // vector length this process runs with (bits; 0 without SVE)
  bool asimd = false, asimd_dotprod = false, i8mm = false, arm_bf16 = false, sve = false, sve2 = false;
  int sve_vector_bits = 0;
  FeatureSet features = 0;                                   // what kernels may use on this CPU and OS
  IsaTier best = IsaTier::generic;                           // best_tier(features)
  std::string amx_status;                                    // why AMX is (not) usable
  std::vector<std::string> flags() const;                    // names of the CPUID bits seen
};

// Detected once per process; never executes an instruction the CPU lacks.
const CpuFeatures& cpu_features();

// The features kernels are chosen for: the CPU's, or a named set (a tier, or "amx_emu") forced
// with KT_KERNEL_ISA=<name> or set_isa_override(). Forcing a set the CPU does not cover throws.
FeatureSet active_features();
IsaTier active_tier();  // best_tier(active_features())
void set_isa_override(const std::string& name);  // "" clears the override
std::string isa_override();

// Where the decode kernels prefetch the weight stream ahead of their loads (gguf_vnni::
// prefetch_ahead: l1 prefetcht0 4 KiB ahead, l2 prefetcht1 16 KiB ahead; the vector drivers'
// stream_ahead: prefetcht0 or prefetcht1, 4 KiB ahead). Which one keeps
// more lines in flight differs by core, so it is chosen per CPU from measurements: l1 on AMD
// family 1Ah (Zen 5), l2 elsewhere (measured on Zen 4; docs/benchmarks/notes.md).
// KT_KERNEL_PREFETCH=l1|l2 forces one. Decided once per process; an unknown value throws
// std::invalid_argument (the MoE layer asks at construction, before any kernel runs).
enum class StreamPrefetch : int { l2 = 0, l1 = 1 };
StreamPrefetch stream_prefetch();
const char* stream_prefetch_name(StreamPrefetch p);

}  // namespace kt
