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
constexpr FeatureSet kTierFeatures[kNumTiers] = {
    0,
    feature::avx2,
    feature::avx2 | feature::avx512,
    feature::avx2 | feature::avx512 | feature::avx512_vnni,
    feature::avx2 | feature::avx512 | feature::avx512_vnni | feature::avx512_bf16,
    feature::avx2 | feature::avx512 | feature::avx512_vnni | feature::avx512_bf16 | feature::amx_tile |
        feature::amx_int8 | feature::amx_bf16,
};
// Bit i of a FeatureSet.
constexpr const char* kFeatureNames[feature::kCount] = {"avx2",     "avx_vnni", "avx512",   "avx512_vnni", "avx512_bf16",
                                                        "amx_tile", "amx_int8", "amx_bf16", "amx_tile_emu"};

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

std::once_flag g_once;
CpuFeatures g_features;
std::mutex g_override_mu;
std::string g_override;  // guarded by g_override_mu
bool g_override_init = false;

void init_override_locked() {
  if (g_override_init) return;
  g_override_init = true;
  const char* env = std::getenv("KT_KERNEL_ISA");
  if (env && *env) g_override = env;
}

std::string missing(FeatureSet have, FeatureSet need) {
  std::string out;
  for (const std::string& n : feature_names(need & ~have)) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The named set `name` (a tier or "amx_emu"), checked against this CPU. who: the caller, for errors;
// in_force: `name` is the override already in force (KT_KERNEL_ISA's, or set_isa's), not a request.
FeatureSet named_set_on_this_cpu(const std::string& name, const std::string& who, bool in_force) {
  const CpuFeatures& f = cpu_features();
  if (name == kAmxEmuOverride) {
    // The emulated AMX kernels keep their AVX512 gather and epilogues and fall back to the
    // avx512_bf16 kernels below min_m: the host needs that tier.
    if (!covers(f.features, tier_features(IsaTier::avx512_bf16)))
      throw std::runtime_error(who + ": '" + kAmxEmuOverride +
                               "' (the AMX tile kernels on the emulator) needs the avx512_bf16 tier; this CPU supports at most '" +
                               tier_name(f.best) + "'");
    return amx_emu_features();
  }
  IsaTier t;
  try {
    t = tier_from_name(name);
  } catch (const std::invalid_argument& e) {
    if (!in_force) throw;
    throw std::invalid_argument(who + ": " + e.what());
  }
  const FeatureSet need = tier_features(t);
  if (!covers(f.features, need)) {
    const std::string what = in_force ? "ISA tier '" + name + "' was requested (KT_KERNEL_ISA or set_isa) but this CPU"
                                      : "ISA tier '" + name + "' is not supported by this CPU; it";
    throw std::runtime_error(what + " supports at most '" + tier_name(f.best) + "' (missing: " + missing(f.features, need) +
                             ")" + (t == IsaTier::amx ? " (AMX: " + f.amx_status + ")" : ""));
  }
  return need;
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

FeatureSet tier_features(IsaTier t) { return kTierFeatures[static_cast<int>(t)]; }

IsaTier best_tier(FeatureSet set) {
  IsaTier best = IsaTier::generic;
  for (int i = 0; i < kNumTiers; ++i)
    if (covers(set, kTierFeatures[i])) best = static_cast<IsaTier>(i);
  return best;
}

FeatureSet amx_emu_features() {
  return tier_features(IsaTier::avx512_bf16) | feature::amx_tile_emu | feature::amx_int8 | feature::amx_bf16;
}

std::string isa_label(FeatureSet set) {
  return set & feature::amx_tile_emu ? kAmxEmuOverride : tier_name(best_tier(set));
}

std::vector<std::string> feature_names(FeatureSet set) {
  std::vector<std::string> out;
  for (int i = 0; i < feature::kCount; ++i)
    if (set & (1u << i)) out.emplace_back(kFeatureNames[i]);
  return out;
}

FeatureSet features_from_names(const std::vector<std::string>& names) {
  FeatureSet set = 0;
  for (const std::string& n : names) {
    int i = 0;
    while (i < feature::kCount && n != kFeatureNames[i]) ++i;
    if (i == feature::kCount) {
      std::string valid;
      for (int j = 0; j < feature::kCount; ++j) valid += std::string(j ? ", " : "") + kFeatureNames[j];
      throw std::invalid_argument("unknown CPU feature '" + n + "'; valid features: " + valid);
    }
    set |= 1u << i;
  }
  return set;
}

std::vector<std::string> CpuFeatures::flags() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* n) { if (on) out.emplace_back(n); };
  add(sse42, "sse4.2"); add(avx, "avx"); add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx_vnni, "avx_vnni");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl"); add(avx512_vnni, "avx512_vnni"); add(avx512_bf16, "avx512_bf16");
  add(amx_tile, "amx_tile"); add(amx_int8, "amx_int8"); add(amx_bf16, "amx_bf16");
  return out;
}

const CpuFeatures& cpu_features() {
  std::call_once(g_once, [] { g_features = detect(); });
  return g_features;
}

FeatureSet active_features() {
  const CpuFeatures& f = cpu_features();
  std::lock_guard<std::mutex> lock(g_override_mu);
  init_override_locked();
  if (g_override.empty()) return f.features;
  return named_set_on_this_cpu(g_override, "KT_KERNEL_ISA / set_isa", /*in_force=*/true);
}

IsaTier active_tier() { return best_tier(active_features()); }

void set_isa_override(const std::string& name) {
  if (!name.empty()) named_set_on_this_cpu(name, "set_isa", /*in_force=*/false);
  std::lock_guard<std::mutex> lock(g_override_mu);
  g_override_init = true;
  g_override = name;
}

std::string isa_override() {
  std::lock_guard<std::mutex> lock(g_override_mu);
  init_override_locked();
  return g_override;
}

}  // namespace kt
