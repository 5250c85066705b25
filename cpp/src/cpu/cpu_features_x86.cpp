// [NOTE] CPU features of an x86-64 CPU, compiled with no ISA flags: this file runs before we know
// what the CPU has. Order of checks (Intel SDM vol. 1 ch. 13-15): CPUID feature bits, then OSXSAVE
// + XGETBV to learn whether the OS saves the register state, then for AMX the Linux per-process
// permission request for the XTILEDATA state component.
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "cpu/detect.h"

namespace kt {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo, hi;
  // xgetbv spelled as bytes so that no -mxsave flag is needed.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

bool bit(unsigned v, int i) { return (v >> i) & 1u; }

// Linux: arch_prctl codes from asm/prctl.h; XFEATURE_XTILEDATA is state component 18.
constexpr int kArchGetXcompPerm = 0x1022;
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

bool request_amx_permission(std::string* why) {
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    *why = "the kernel refused arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) (Linux < 5.16?)";
    return false;
  }
  unsigned long mask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &mask) != 0 || !(mask & (1ul << kXfeatureXtiledata))) {
    *why = "arch_prctl granted no XTILEDATA permission";
    return false;
  }
  return true;
}

}  // namespace

CpuFeatures detect() {
  CpuFeatures f;
  Regs r0 = cpuid(0, 0);
  char vendor[13] = {};
  std::memcpy(vendor + 0, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  f.vendor = vendor;
  unsigned max_leaf = r0.a;
  if (cpuid(0x80000000u, 0).a >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i + 0, &r.a, 4);
      std::memcpy(brand + 16 * i + 4, &r.b, 4);
      std::memcpy(brand + 16 * i + 8, &r.c, 4);
      std::memcpy(brand + 16 * i + 12, &r.d, 4);
    }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    while (!f.brand.empty() && f.brand.front() == ' ') f.brand.erase(0, 1);
  }
  Regs r1 = cpuid(1, 0);
  const int base_family = int((r1.a >> 8) & 0xf), base_model = int((r1.a >> 4) & 0xf);
  f.family = base_family == 0xf ? base_family + int((r1.a >> 20) & 0xff) : base_family;
  f.model = base_family == 0x6 || base_family == 0xf ? base_model | int((r1.a >> 12) & 0xf0) : base_model;
  f.sse42 = bit(r1.c, 20);
  f.fma = bit(r1.c, 12);
  f.f16c = bit(r1.c, 29);
  f.avx = bit(r1.c, 28);
  bool osxsave = bit(r1.c, 27);
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  f.os_avx = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
  f.os_avx512 = (xcr0 & 0xe6) == 0xe6;        // + opmask, ZMM_Hi256, Hi16_ZMM
  f.os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG + XTILEDATA
  if (max_leaf >= 7) {
    Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.b, 5);
    f.avx512f = bit(r7.b, 16);
    f.avx512dq = bit(r7.b, 17);
    f.avx512bw = bit(r7.b, 30);
    f.avx512vl = bit(r7.b, 31);
    f.avx512_vnni = bit(r7.c, 11);
    f.amx_bf16 = bit(r7.d, 22);
    f.amx_tile = bit(r7.d, 24);
    f.amx_int8 = bit(r7.d, 25);
    if (r7.a >= 1) {
      Regs r71 = cpuid(7, 1);
      f.avx_vnni = bit(r71.a, 4);
      f.avx512_bf16 = bit(r71.a, 5);
    }
  }
  // Each feature: its CPUID bits and the OS state its registers live in, nothing else.
  auto set = [&](bool on, FeatureSet x) { if (on) f.features |= x; };
  set(f.os_avx && f.avx && f.avx2 && f.fma && f.f16c, feature::avx2);
  set(f.os_avx && f.avx_vnni, feature::avx_vnni);
  set(f.os_avx512 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl, feature::avx512);
  set(f.os_avx512 && f.avx512_vnni, feature::avx512_vnni);
  set(f.os_avx512 && f.avx512_bf16, feature::avx512_bf16);
  if (!f.amx_tile) {
    f.amx_status = "CPU reports no AMX-TILE";
  } else if (!f.os_amx) {
    f.amx_status = "OS does not enable tile state in XCR0";
  } else if (!request_amx_permission(&f.amx_status)) {
    // amx_status says why
  } else {
    f.amx_permitted = true;
    f.features |= feature::amx_tile;
    set(f.amx_int8, feature::amx_int8);
    set(f.amx_bf16, feature::amx_bf16);
    const bool tier_ok = covers(f.features, tier_features(IsaTier::amx));
    f.amx_status = tier_ok ? "usable"
                   : !(f.amx_int8 && f.amx_bf16) ? "usable, but the CPU lacks AMX-INT8 or AMX-BF16 (see features)"
                                                 : "usable, but the avx512_bf16 tier is missing (see features)";
  }
  f.best = best_tier(f.features);
  return f;
}


}  // namespace kt
#endif  // __x86_64__
