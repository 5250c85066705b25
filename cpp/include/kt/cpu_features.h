// CPU feature detection and ISA tiers. ISA-free: safe to include anywhere.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kt {

// Tiers are cumulative: each one requires every feature of the tiers before it.
enum class IsaTier : int {
  generic = 0,      // scalar reference kernels, any x86-64
  avx2 = 1,         // AVX2 + FMA + F16C
  avx512 = 2,       // AVX512 F + BW + DQ + VL
  avx512_vnni = 3,  // + AVX512-VNNI
  avx512_bf16 = 4,  // + AVX512-BF16
  amx = 5,          // + AMX-TILE, AMX-INT8, AMX-BF16 with OS permission
};
constexpr int kNumTiers = 6;

const char* tier_name(IsaTier t);
// Throws std::invalid_argument listing the valid names.
IsaTier tier_from_name(const std::string& name);

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_vnni = false, avx512_bf16 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // XCR0 state enabled by the OS
  bool amx_permitted = false;                                // arch_prctl(ARCH_REQ_XCOMP_PERM) granted
  IsaTier best = IsaTier::generic;                           // best tier this CPU and OS can run
  std::string amx_status;                                    // why AMX is (not) usable
  std::vector<std::string> flags() const;                    // names of the features seen
};

// Detected once per process; never executes an instruction the CPU lacks.
const CpuFeatures& cpu_features();

// The tier kernels are chosen for: the best one, or a lower one forced with
// KT_KERNEL_ISA=<name> or set_isa_override(). Forcing a tier above `best` throws.
IsaTier active_tier();
void set_isa_override(const std::string& name);  // "" clears the override
std::string isa_override();

// Test-only override, not a tier: "amx_emu" runs the AMX tile kernels on the software tile
// emulator (slow) and the avx512_bf16 tier's kernels for everything else (active_tier() returns
// avx512_bf16), so it needs that tier. Never chosen automatically.
constexpr const char* kAmxEmuOverride = "amx_emu";
bool amx_emulated();  // the override in force is "amx_emu"

}  // namespace kt
