// [NOTE] CPU features of an aarch64 CPU, from the bits the Linux kernel publishes in the auxiliary
// vector (getauxval(AT_HWCAP / AT_HWCAP2): what the CPU has and the kernel enables for user space),
// and SVE's vector length from prctl(PR_SVE_GET_VL). Compiled with no ISA flags.
#if defined(__aarch64__)
#include <sys/auxv.h>
#include <sys/prctl.h>

#include <fstream>
#include <string>

#include "cpu/detect.h"

namespace kt {
namespace {

// Linux's arch/arm64/include/uapi/asm/hwcap.h
constexpr unsigned long kHwcapAsimd = 1ul << 1;
constexpr unsigned long kHwcapAsimdDp = 1ul << 20;
constexpr unsigned long kHwcapSve = 1ul << 22;
constexpr unsigned long kHwcap2Sve2 = 1ul << 1;
constexpr unsigned long kHwcap2I8mm = 1ul << 13;
constexpr unsigned long kHwcap2Bf16 = 1ul << 14;
constexpr int kPrSveGetVl = 51;          // linux/prctl.h PR_SVE_GET_VL
constexpr int kPrSveVlLenMask = 0xffff;  // the vector length in bytes

// "CPU implementer" of /proc/cpuinfo (MIDR_EL1[31:24]) by name, for reports.
std::string implementer() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CPU implementer", 0) != 0) continue;
    const std::string code = line.substr(line.find(':') + 1);
    const unsigned long v = std::stoul(code, nullptr, 16);
    switch (v) {
      case 0x41: return "ARM";
      case 0x48: return "HiSilicon";
      case 0x4e: return "NVIDIA";
      case 0x51: return "Qualcomm";
      case 0x61: return "Apple";
      case 0xc0: return "Ampere";
      default: return "implementer " + code.substr(code.find_first_not_of(' '));
    }
  }
  return "unknown";
}

}  // namespace

CpuFeatures detect() {
  CpuFeatures f;
  f.vendor = implementer();
  f.brand = "aarch64";
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.asimd = hw & kHwcapAsimd;
  f.asimd_dotprod = hw & kHwcapAsimdDp;
  f.sve = hw & kHwcapSve;
  f.sve2 = hw2 & kHwcap2Sve2;
  f.i8mm = hw2 & kHwcap2I8mm;
  f.arm_bf16 = hw2 & kHwcap2Bf16;
  if (f.sve) {
    const int vl = prctl(kPrSveGetVl, 0, 0, 0, 0);
    f.sve_vector_bits = vl < 0 ? 0 : (vl & kPrSveVlLenMask) * 8;
  }
  using namespace feature;
  f.features = (f.asimd ? neon : 0) | (f.asimd_dotprod ? dotprod : 0) | (f.i8mm ? i8mm : 0) |
               (f.arm_bf16 ? arm_bf16 : 0) | (f.sve && f.sve_vector_bits >= 128 ? sve : 0);
  f.amx_status = "not an x86 CPU";
  f.best = best_tier(f.features);
  return f;
}

}  // namespace kt
#endif  // __aarch64__
