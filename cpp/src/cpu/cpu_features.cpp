// [NOTE] Compiled with no ISA flags: this file runs before we know what the CPU has. The tiers, the
// override and the features' names; what the CPU has comes from detect() (cpu/detect.h).
#include "kt/cpu_features.h"
#include "cpu/detect.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace kt {
namespace {

constexpr const char* kTierNames[kNumTiers] = {"generic",   "avx2", "avx512",       "avx512_vnni", "avx512_bf16", "amx",
                                               "neon",      "neon_dotprod", "neon_i8mm", "neon_bf16", "sve"};
constexpr FeatureSet kTierFeatures[kNumTiers] = {
    0,
    feature::avx2,
    feature::avx2 | feature::avx512,
    feature::avx2 | feature::avx512 | feature::avx512_vnni,
    feature::avx2 | feature::avx512 | feature::avx512_vnni | feature::avx512_bf16,
    feature::avx2 | feature::avx512 | feature::avx512_vnni | feature::avx512_bf16 | feature::amx_tile |
        feature::amx_int8 | feature::amx_bf16,
    feature::neon,
    feature::neon | feature::dotprod,
    feature::neon | feature::dotprod | feature::i8mm,
    feature::neon | feature::dotprod | feature::i8mm | feature::arm_bf16,
    feature::neon | feature::dotprod | feature::i8mm | feature::arm_bf16 | feature::sve,
};
// Bit i of a FeatureSet.
constexpr const char* kFeatureNames[feature::kCount] = {"avx2",     "avx_vnni", "avx512",   "avx512_vnni", "avx512_bf16",
                                                        "amx_tile", "amx_int8", "amx_bf16", "amx_tile_emu",
                                                        "neon",     "dotprod",  "i8mm",     "arm_bf16",    "sve"};

// detect(): cpu_features_x86.cpp or cpu_features_aarch64.cpp, by the machine compiled for.

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
  add(asimd, "asimd"); add(asimd_dotprod, "asimddp"); add(i8mm, "i8mm"); add(arm_bf16, "bf16");
  add(sve, "sve"); add(sve2, "sve2");
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

const char* stream_prefetch_name(StreamPrefetch p) { return p == StreamPrefetch::l1 ? "l1" : "l2"; }

StreamPrefetch stream_prefetch() {
  static const StreamPrefetch chosen = [] {
    const char* env = std::getenv("KT_KERNEL_PREFETCH");
    if (env && *env) {
      const std::string v = env;
      if (v == "l1") return StreamPrefetch::l1;
      if (v == "l2") return StreamPrefetch::l2;
      throw std::invalid_argument("KT_KERNEL_PREFETCH='" + v + "': expected 'l1' or 'l2' (or unset: chosen by CPU)");
    }
    const CpuFeatures& f = cpu_features();
    return f.vendor == "AuthenticAMD" && f.family >= 0x1a ? StreamPrefetch::l1 : StreamPrefetch::l2;
  }();
  return chosen;
}

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
