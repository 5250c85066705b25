// [NOTE] Compiled with no ISA flags: this file runs before we know what the CPU has.
// Order of checks (Intel SDM vol. 1 ch. 13-15): CPUID feature bits, then OSXSAVE + XGETBV
// to learn whether the OS saves the register state, then for AMX the Linux per-process
// permission request for the XTILEDATA state component.
#include "kt/cpu_features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace kt {
namespace {

constexpr const char* kTierNames[kNumTiers] = {"generic", "avx2", "avx512", "avx512_vnni",
                                               "avx512_bf16", "amx"};

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
    if (r7.a >= 1) f.avx512_bf16 = bit(cpuid(7, 1).a, 5);
  }
  // Tiers: every feature of the tier and of those below, and the OS state for it.
  bool t_avx2 = f.os_avx && f.avx && f.avx2 && f.fma && f.f16c;
  bool t_avx512 = t_avx2 && f.os_avx512 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
  bool t_vnni = t_avx512 && f.avx512_vnni;
  bool t_bf16 = t_vnni && f.avx512_bf16;
  f.best = t_bf16 ? IsaTier::avx512_bf16
           : t_vnni ? IsaTier::avx512_vnni
           : t_avx512 ? IsaTier::avx512
           : t_avx2 ? IsaTier::avx2
                    : IsaTier::generic;
  if (!(f.amx_tile && f.amx_int8 && f.amx_bf16)) {
    f.amx_status = "CPU reports no AMX-TILE/AMX-INT8/AMX-BF16";
  } else if (!f.os_amx) {
    f.amx_status = "OS does not enable tile state in XCR0";
  } else if (!t_bf16) {
    f.amx_status = "AMX present but AVX512-BF16 tier missing";
  } else if (!request_amx_permission(&f.amx_status)) {
    // amx_status says why
  } else {
    f.amx_permitted = true;
    f.amx_status = "usable";
    f.best = IsaTier::amx;
  }
  return f;
}

std::once_flag g_once;
CpuFeatures g_features;
std::mutex g_override_mu;
std::string g_override;  // guarded by g_override_mu
bool g_override_init = false;

// The emulated AMX kernels keep their AVX512 gather and epilogues and fall back to the
// avx512_bf16 kernels below min_m: the host needs that tier.
void check_amx_emu_host(const CpuFeatures& f, const char* who) {
  if (static_cast<int>(f.best) < static_cast<int>(IsaTier::avx512_bf16))
    throw std::runtime_error(std::string(who) + ": '" + kAmxEmuOverride +
                             "' (the AMX tile kernels on the emulator) needs the avx512_bf16 tier; this CPU supports at most '" +
                             tier_name(f.best) + "'");
}

void init_override_locked() {
  if (g_override_init) return;
  g_override_init = true;
  const char* env = std::getenv("KT_KERNEL_ISA");
  if (env && *env) g_override = env;
}

}  // namespace

const char* tier_name(IsaTier t) { return kTierNames[static_cast<int>(t)]; }

IsaTier tier_from_name(const std::string& name) {
  for (int i = 0; i < kNumTiers; ++i)
    if (name == kTierNames[i]) return static_cast<IsaTier>(i);
  std::string valid;
  for (int i = 0; i < kNumTiers; ++i) valid += std::string(i ? ", " : "") + kTierNames[i];
  throw std::invalid_argument("unknown ISA tier '" + name + "'; valid tiers: " + valid + " (and, for tests, " +
                              kAmxEmuOverride + ": the AMX tile kernels on the tile emulator)");
}

std::vector<std::string> CpuFeatures::flags() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* n) { if (on) out.emplace_back(n); };
  add(sse42, "sse4.2"); add(avx, "avx"); add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl"); add(avx512_vnni, "avx512_vnni"); add(avx512_bf16, "avx512_bf16");
  add(amx_tile, "amx_tile"); add(amx_int8, "amx_int8"); add(amx_bf16, "amx_bf16");
  return out;
}

const CpuFeatures& cpu_features() {
  std::call_once(g_once, [] { g_features = detect(); });
  return g_features;
}

IsaTier active_tier() {
  const CpuFeatures& f = cpu_features();
  std::lock_guard<std::mutex> lock(g_override_mu);
  init_override_locked();
  if (g_override.empty()) return f.best;
  if (g_override == kAmxEmuOverride) {
    check_amx_emu_host(f, "KT_KERNEL_ISA / set_isa");
    return IsaTier::avx512_bf16;
  }
  IsaTier t;
  try {
    t = tier_from_name(g_override);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("KT_KERNEL_ISA / set_isa: ") + e.what());
  }
  if (static_cast<int>(t) > static_cast<int>(f.best))
    throw std::runtime_error(std::string("ISA tier '") + g_override + "' was requested (KT_KERNEL_ISA or set_isa) but this CPU supports at most '" +
                             tier_name(f.best) + "'" + (t == IsaTier::amx ? " (AMX: " + f.amx_status + ")" : ""));
  return t;
}

void set_isa_override(const std::string& name) {
  if (name == kAmxEmuOverride) {
    check_amx_emu_host(cpu_features(), "set_isa");
  } else if (!name.empty()) {
    IsaTier t = tier_from_name(name);
    const CpuFeatures& f = cpu_features();
    if (static_cast<int>(t) > static_cast<int>(f.best))
      throw std::runtime_error("ISA tier '" + name + "' is not supported by this CPU; it supports at most '" +
                               tier_name(f.best) + "'" + (t == IsaTier::amx ? " (AMX: " + f.amx_status + ")" : ""));
  }
  std::lock_guard<std::mutex> lock(g_override_mu);
  g_override_init = true;
  g_override = name;
}

bool amx_emulated() {
  std::lock_guard<std::mutex> lock(g_override_mu);
  init_override_locked();
  return g_override == kAmxEmuOverride;
}

std::string isa_override() {
  std::lock_guard<std::mutex> lock(g_override_mu);
  init_override_locked();
  return g_override;
}

}  // namespace kt
