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
constexpr int kCount = 9;
}  // namespace feature

constexpr bool covers(FeatureSet have, FeatureSet need) { return (have & need) == need; }
// Names in bit order ("avx2", "avx_vnni", ...); from_names throws std::invalid_argument on a
// name it does not know, listing the valid ones.
std::vector<std::string> feature_names(FeatureSet set);
FeatureSet features_from_names(const std::vector<std::string>& names);

// The named feature sets users force (KT_KERNEL_ISA, set_isa). Each one holds the features of
// the tiers before it, so they also order the sets: a CPU "runs" every tier its features cover.
enum class IsaTier : int {
  generic = 0,      // none: scalar reference kernels, any x86-64
  avx2 = 1,         // avx2
  avx512 = 2,       // + avx512
  avx512_vnni = 3,  // + avx512_vnni
  avx512_bf16 = 4,  // + avx512_bf16
  amx = 5,          // + amx_tile, amx_int8, amx_bf16
};
constexpr int kNumTiers = 6;

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
