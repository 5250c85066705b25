// Machine-limit probes: the driver. ISA-free (baseline x86-64 flags): it checks the CPU and the
// active tier, then calls the loops in cpp/src/kernels/<isa>/probe_*.cpp.
//
// Thread model: N std::threads, like the engine's workers (kt/engine.h), pinned by the engine's
// rule unless told otherwise: thread i on the i-th CPU this process may use when N <= the allowed
// CPUs and KT_KERNEL_PIN_THREADS is not 0. The caller only waits. A std::barrier starts every
// trial on all threads together.
#include "probe/probe.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>

#include "kt/cpu_features.h"
#include "kernels/isa_tiers.h"

namespace kt::probe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Runs body(i) on `threads` new threads (i = 0..threads-1) and joins them. Records the kernel
// thread id of each and, when pinning, its CPU. The first exception thrown by a body is rethrown.
void run_threads(int threads, bool pin, std::vector<int>* cpus_out, std::vector<long>* tids_out,
                 const std::function<void(int)>& body) {
  std::vector<int> allowed = allowed_cpus();
  if (pin && allowed.empty()) throw std::runtime_error("pin=True, but sched_getaffinity gave no CPU");
  cpus_out->assign(pin ? threads : 0, -1);
  tids_out->assign(threads, 0);
  std::vector<std::exception_ptr> errors(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      (*tids_out)[i] = long(syscall(SYS_gettid));
      if (pin) {
        int cpu = allowed[i % allowed.size()];
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        (*cpus_out)[i] = sched_setaffinity(0, sizeof(set), &set) == 0 ? cpu : -1;
      }
      try {
        body(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

void check_threads(int threads) {
  if (threads < 1 || threads > 4096)
    throw std::invalid_argument("threads=" + std::to_string(threads) + " must be in 1..4096");
}

// Scalar fallback for the generic tier: 64-bit loads, 4 accumulators.
uint64_t read_sum_generic(const void* p, size_t bytes) {
  const volatile uint64_t* v = static_cast<const volatile uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 4 <= bytes / 8; i += 4) {
    a0 ^= v[i];
    a1 ^= v[i + 1];
    a2 ^= v[i + 2];
    a3 ^= v[i + 3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
}

struct Family {
  const char* name;
  const char* instruction;
  const char* unit;
  IsaTier tier;  // the tier whose kernels (and this loop) need it
  int ops_per_instruction;  // SVE families: per 128 bits of the vector length (per_128_bits)
  int accumulators;
  uint64_t (*loop)(int64_t iters);
  bool per_128_bits = false;
};

int ops_per_instruction(const Family& fam) {
  return fam.per_128_bits ? fam.ops_per_instruction * (cpu_features().sve_vector_bits / 128) : fam.ops_per_instruction;
}

// One row per instruction family; a family runs where the active features cover its tier's. The
// amx tier needs amx_tile, which is set only where AMX is permitted (arch_prctl granted) and never
// under the amx_emu override (amx_tile_emu instead), so the tile families run on real tiles only.
#if KT_X86_TIERS  // the x86 tiers' loops (kernels/*/probe_*.cpp) are built on x86 only
const Family kFamilies[] = {
    {"fp32_fma_ymm", "vfmadd231ps ymm", "GFLOP/s", IsaTier::avx2, 16, kYmmAccumulators, fma_f32_ymm__avx2},
    {"fp32_fma_zmm", "vfmadd231ps zmm", "GFLOP/s", IsaTier::avx512, 32, kZmmAccumulators, fma_f32_zmm__avx512},
    {"bf16_dpbf16ps_zmm", "vdpbf16ps zmm", "GFLOP/s", IsaTier::avx512_bf16, 64, kZmmAccumulators,
     bf16_dpbf16ps_zmm__avx512bf16},
    {"bf16_tdpbf16ps_tmm", "tdpbf16ps 16x16x32", "GFLOP/s", IsaTier::amx, 16384, kTileAccumulators,
     bf16_tdpbf16ps_tmm__amx},
    {"int8_pmaddubsw_ymm", "vpmaddubsw ymm (+ vpaddw)", "GOP/s", IsaTier::avx2, 64, kYmmAccumulators,
     int8_maddubs_ymm__avx2},
    {"int8_pmaddubsw_zmm", "vpmaddubsw zmm (+ vpaddw)", "GOP/s", IsaTier::avx512, 128, kZmmAccumulators,
     int8_maddubs_zmm__avx512},
    {"int8_vpdpbusd_zmm", "vpdpbusd zmm", "GOP/s", IsaTier::avx512_vnni, 128, kZmmAccumulators,
     int8_dpbusd_zmm__avx512vnni},
    {"int8_tdpbusd_tmm", "tdpbusd 16x16x64", "GOP/s", IsaTier::amx, 32768, kTileAccumulators,
     int8_tdpbusd_tmm__amx},
};
#elif KT_ARM_TIERS  // the ARM tiers' loops (kernels/neon, kernels/sve) are built on aarch64 only
const Family kFamilies[] = {
    {"fp32_fmla_q", "fmla v.4s", "GFLOP/s", IsaTier::neon, 8, kArmAccumulators, fma_f32_q__neon},
    {"fp32_fmla_z", "fmla z.s (indexed)", "GFLOP/s", IsaTier::sve, 8, kArmAccumulators, fma_f32_z__sve, true},
    {"bf16_bfdot_q", "bfdot v.4s", "GFLOP/s", IsaTier::neon_bf16, 16, kArmAccumulators, bf16_bfdot_q__neonbf16},
    {"bf16_bfmmla_q", "bfmmla v.4s", "GFLOP/s", IsaTier::neon_bf16, 32, kArmAccumulators, bf16_bfmmla_q__neonbf16},
    {"bf16_bfmmla_z", "bfmmla z.s", "GFLOP/s", IsaTier::sve, 32, kArmAccumulators, bf16_bfmmla_z__sve, true},
    {"int8_sdot_q", "sdot v.4s", "GOP/s", IsaTier::neon_dotprod, 32, kArmAccumulators, int8_sdot_q__dotprod},
    {"int8_sdot_z", "sdot z.s", "GOP/s", IsaTier::sve, 32, kArmAccumulators, int8_sdot_z__sve, true},
    {"int8_smmla_q", "smmla v.4s", "GOP/s", IsaTier::neon_i8mm, 64, kArmAccumulators, int8_smmla_q__i8mm},
    {"int8_smmla_z", "smmla z.s", "GOP/s", IsaTier::sve, 64, kArmAccumulators, int8_smmla_z__sve, true},
};
#else
const std::array<Family, 0> kFamilies{};  // a build without the tiers' files
#endif

std::atomic<uint64_t> g_sink{0};  // checksums land here so no loop is dead code

}  // namespace

bool engine_pins(int threads) {
  const char* env = std::getenv("KT_KERNEL_PIN_THREADS");
  return threads <= int(allowed_cpus().size()) && !(env && std::strcmp(env, "0") == 0);
}

BandwidthResult measure_bandwidth(int threads, size_t mib, int repeats, std::optional<bool> pin_opt) {
  check_threads(threads);
  const bool pin = pin_opt.value_or(engine_pins(threads));
  if (mib < 1 || mib > (size_t(1) << 20))
    throw std::invalid_argument("mib=" + std::to_string(mib) + " must be in 1..1048576");
  if (repeats < 1) throw std::invalid_argument("repeats=" + std::to_string(repeats) + " must be >= 1");

  BandwidthResult r;
  r.threads = threads;
  r.pinned = pin;
  uint64_t (*read)(const void*, size_t) = read_sum_generic;
  r.loads = "64-bit scalar (generic)";
#if KT_X86_TIERS
  const FeatureSet have = active_features();
  if (covers(have, tier_features(IsaTier::avx512))) {
    read = read_sum__avx512;
    r.loads = "zmm (avx512)";
  } else if (covers(have, tier_features(IsaTier::avx2))) {
    read = read_sum__avx2;
    r.loads = "ymm (avx2)";
  }
#elif KT_ARM_TIERS
  const FeatureSet have = active_features();
  if (covers(have, tier_features(IsaTier::sve))) {
    read = read_sum__sve;
    r.loads = "z" + std::to_string(cpu_features().sve_vector_bits) + " (sve)";
  } else if (covers(have, tier_features(IsaTier::neon))) {
    read = read_sum__neon;
    r.loads = "q 128-bit (neon)";
  }
#endif

  // One buffer, 2 MiB aligned and advised for huge pages (as host_memory.cpp does for weights),
  // split into equal slices of whole 4 KiB pages; each thread first-touches and reads its own.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t total = ((mib << 20) + kHuge - 1) / kHuge * kHuge;
  const size_t slice = total / threads / 4096 * 4096;
  if (slice == 0) throw std::invalid_argument("mib=" + std::to_string(mib) + " is too small for " +
                                              std::to_string(threads) + " threads");
  std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(std::aligned_alloc(kHuge, total)), &std::free);
  if (!buf) throw std::runtime_error("cannot allocate " + std::to_string(total) + " bytes for the bandwidth probe");
  r.huge_pages_advised = madvise(buf.get(), total, MADV_HUGEPAGE) == 0;
  r.bytes = slice * threads;

  std::barrier sync(threads);
  std::vector<double> secs(repeats, 0);
  run_threads(threads, pin, &r.cpus, &r.thread_ids, [&](int i) {
    char* mine = buf.get() + slice * i;
    std::memset(mine, i + 1, slice);  // first touch by the reading thread
    uint64_t sum = read(mine, slice);  // warm-up pass (TLB, clocks)
    for (int rep = 0; rep < repeats; ++rep) {
      sync.arrive_and_wait();
      auto t0 = Clock::now();
      sum ^= read(mine, slice);
      sync.arrive_and_wait();  // the repeat ends when the slowest thread is done
      if (i == 0) secs[rep] = seconds_since(t0);
    }
    g_sink.fetch_xor(sum, std::memory_order_relaxed);
  });
  for (double s : secs) r.gbps.push_back(double(r.bytes) / s / 1e9);
  r.best_gbps = *std::max_element(r.gbps.begin(), r.gbps.end());
  r.median_gbps = median(r.gbps);
  return r;
}

std::vector<PeakResult> peak_families() {
  const CpuFeatures& f = cpu_features();
  const FeatureSet have = active_features();
  std::vector<PeakResult> out;
  for (const Family& fam : kFamilies) {
    PeakResult p;
    p.name = fam.name;
    p.instruction = fam.instruction;
    p.unit = fam.unit;
    p.isa = tier_name(fam.tier);
    p.ops_per_instruction = ops_per_instruction(fam);
    p.accumulators = fam.accumulators;
    if (!covers(f.features, tier_features(fam.tier))) {
      p.reason = std::string("not available: this CPU's best tier is ") + tier_name(f.best) + ", the family needs " +
                 tier_name(fam.tier);
    } else if (!covers(have, tier_features(fam.tier))) {
      p.reason = std::string("not available at the active tier ") + tier_name(best_tier(have)) + " (override " + isa_override() +
                 "); the family needs " + tier_name(fam.tier);
    } else {
      p.available = true;
    }
    out.push_back(std::move(p));
  }
  return out;
}

PeaksResult measure_peaks(int threads, double seconds, std::optional<bool> pin_opt,
                          const std::vector<std::string>& only) {
  check_threads(threads);
  const bool pin = pin_opt.value_or(engine_pins(threads));
  if (!(seconds > 0 && seconds <= 60))
    throw std::invalid_argument("seconds=" + std::to_string(seconds) + " must be in (0, 60]");
  PeaksResult out;
  out.threads = threads;
  out.pinned = pin;
  out.seconds_per_family = seconds;
  out.tier = tier_name(active_tier());

  // Trials of about 50 ms (at least 3) per family: best and median over trials.
  const int trials = std::max(3, int(seconds / 0.05 + 0.5));
  const double trial_s = seconds / trials;

  for (const std::string& name : only) {
    bool known = false;
    std::string names;
    for (const Family& fam : kFamilies) {
      known = known || name == fam.name;
      names += std::string(names.empty() ? "" : ", ") + fam.name;
    }
    if (!known) throw std::invalid_argument("unknown probe family '" + name + "'; known: " + names);
  }
  std::vector<const Family*> runnable;
  std::vector<PeakResult> all = peak_families();
  for (size_t j = 0; j < all.size(); ++j) {
    if (!only.empty() && std::find(only.begin(), only.end(), all[j].name) == only.end()) continue;
    if (all[j].available) runnable.push_back(&kFamilies[j]);
    out.families.push_back(std::move(all[j]));
  }

  // Iterations per chunk: about 1 ms on one thread (calibrated from a short run), so the clock is
  // read rarely next to the work.
  std::vector<int64_t> chunk(runnable.size(), 1);
  for (size_t k = 0; k < runnable.size(); ++k) {
    int64_t n = 1000;
    for (;;) {
      auto t0 = Clock::now();
      g_sink.fetch_xor(runnable[k]->loop(n), std::memory_order_relaxed);
      double s = seconds_since(t0);
      if (s > 2e-3 || n > (int64_t(1) << 40)) {
        chunk[k] = std::max<int64_t>(1, int64_t(n * 1e-3 / s));
        break;
      }
      n *= 4;
    }
  }

  // All families on the same threads, one after another; per trial every thread runs whole chunks
  // until trial_s has passed on its clock, and the trial's rate is all threads' operations over the
  // longest thread's time.
  std::barrier sync(threads);
  std::vector<std::vector<double>> rates(runnable.size(), std::vector<double>(trials, 0));
  std::vector<int64_t> done(threads, 0);
  std::vector<double> took(threads, 0);
  run_threads(threads, pin, &out.cpus, &out.thread_ids, [&](int i) {
    uint64_t sum = 0;
    for (size_t k = 0; k < runnable.size(); ++k) {
      const Family& fam = *runnable[k];
      const double ops_per_iter = double(ops_per_instruction(fam)) * fam.accumulators;
      for (int t = 0; t < trials; ++t) {
        sync.arrive_and_wait();
        auto t0 = Clock::now();
        int64_t iters = 0;
        do {
          sum ^= fam.loop(chunk[k]);
          iters += chunk[k];
        } while (seconds_since(t0) < trial_s);
        done[i] = iters;
        took[i] = seconds_since(t0);
        sync.arrive_and_wait();
        if (i == 0) {
          double ops = 0, longest = 0;
          for (int j = 0; j < threads; ++j) {
            ops += double(done[j]) * ops_per_iter;
            longest = std::max(longest, took[j]);
          }
          rates[k][t] = ops / longest / 1e9;
        }
        sync.arrive_and_wait();  // thread 0 has read done/took before the next trial writes them
      }
    }
    g_sink.fetch_xor(sum, std::memory_order_relaxed);
  });
  for (size_t k = 0, j = 0; j < out.families.size(); ++j) {
    PeakResult& p = out.families[j];
    if (!p.available) continue;
    p.rates = rates[k];
    p.best = *std::max_element(p.rates.begin(), p.rates.end());
    p.median = median(p.rates);
    ++k;
  }
  return out;
}

double measure_clock_ghz(double seconds) {
  // 64 dependent register adds per asm statement: each waits for the one before (1 cycle of
  // latency on every x86-64 core of the last 20 years), so adds per second ~ core cycles per
  // second. The addend is a register, not an immediate: Golden Cove and later Intel cores fold
  // chains of add-immediate (and inc, lea disp) in the renamer, several per cycle (measured: 23
  // "GHz" on a ~3.9 GHz Xeon); a register's value is unknown at rename, so each add executes.
  // The estimate is the fastest chunk of 640k adds (~0.2 ms): a chunk the scheduler interrupted
  // reads slower, and on a busy machine most of them are.
  constexpr int kReps = 10000;
  const uint64_t one = 1;
  uint64_t x = 0;
  double best = 0;
  auto t0 = Clock::now();
  do {
    auto c0 = Clock::now();
    for (int i = 0; i < kReps; ++i) {
      asm volatile(
          ".rept 64\n\t"
#if defined(__x86_64__)
          "add %[one], %[x]\n\t"
#else  // aarch64: add Xd, Xn, Xm, also 1 cycle of latency
          "add %[x], %[x], %[one]\n\t"
#endif
          ".endr"
          : [x] "+r"(x)
          : [one] "r"(one));
    }
    best = std::max(best, double(kReps) * 64 / seconds_since(c0) / 1e9);
  } while (seconds_since(t0) < seconds);
  g_sink.fetch_xor(x, std::memory_order_relaxed);
  return best;
}

}  // namespace kt::probe
