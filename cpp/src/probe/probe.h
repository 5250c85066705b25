// Machine-limit probes: read bandwidth and the peak rate of each instruction family, measured with
// N threads at once, in the engine's thread model: N std::threads, pinned one per allowed CPU when
// N <= the allowed CPUs and KT_KERNEL_PIN_THREADS is not 0 (kt/engine.h), unless pin says otherwise.
// ISA-free header. The loops that execute ISA instructions live in cpp/src/kernels/<isa>/probe_*.cpp
// (compiled with that ISA's flags, checked by cmake/check_isa_isolation.cmake); the driver in
// cpp/src/probe/probe.cpp calls them only after checking the CPU and the active tier.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kt::probe {

// ---- loops, one per ISA file ------------------------------------------------------------------
// read_sum: streams `bytes` (a multiple of 512, 64-byte aligned) with the widest loads of the ISA
// and returns a checksum so the loads cannot be elided.
uint64_t read_sum__avx2(const void* p, size_t bytes);
uint64_t read_sum__avx512(const void* p, size_t bytes);
uint64_t read_sum__neon(const void* p, size_t bytes);
uint64_t read_sum__sve(const void* p, size_t bytes);

// Peak loops: `iters` iterations of kPeakAccumulators independent instructions of the family
// (one accumulator chain each, enough to hide the latency). Return a checksum.
uint64_t fma_f32_ymm__avx2(int64_t iters);           // vfmadd231ps ymm   8 MACs = 16 flops
uint64_t int8_maddubs_ymm__avx2(int64_t iters);      // vpmaddubsw ymm + vpaddw   32 MACs = 64 ops
uint64_t fma_f32_zmm__avx512(int64_t iters);         // vfmadd231ps zmm  16 MACs = 32 flops
uint64_t int8_maddubs_zmm__avx512(int64_t iters);    // vpmaddubsw zmm + vpaddw   64 MACs = 128 ops
uint64_t int8_dpbusd_zmm__avx512vnni(int64_t iters);  // vpdpbusd zmm  64 MACs = 128 ops
uint64_t bf16_dpbf16ps_zmm__avx512bf16(int64_t iters);  // vdpbf16ps zmm 32 MACs = 64 flops
// Tile loops: configure the tiles, load A and B once, then `iters` x kTileAccumulators tile
// instructions, and release the tiles. Run only at the amx tier (kt::cpu_features().amx_permitted).
uint64_t int8_tdpbusd_tmm__amx(int64_t iters);    // tdpbusd 16x16x64: 16384 MACs = 32768 ops
uint64_t bf16_tdpbf16ps_tmm__amx(int64_t iters);  // tdpbf16ps 16x16x32: 8192 MACs = 16384 flops
// aarch64, 16 accumulators (of 32 vector registers); the SVE loops' figures are per 128 bits of the
// run-time vector length.
uint64_t fma_f32_q__neon(int64_t iters);            // fmla v.4s          4 MACs = 8 flops
uint64_t int8_sdot_q__dotprod(int64_t iters);       // sdot v.4s          16 MACs = 32 ops
uint64_t int8_smmla_q__i8mm(int64_t iters);         // smmla v.4s         32 MACs = 64 ops
uint64_t bf16_bfdot_q__neonbf16(int64_t iters);     // bfdot v.4s         8 MACs = 16 flops
uint64_t bf16_bfmmla_q__neonbf16(int64_t iters);    // bfmmla v.4s        16 MACs = 32 flops
uint64_t fma_f32_z__sve(int64_t iters);             // fmla z.s (indexed) 8 flops per 128 bits
uint64_t int8_sdot_z__sve(int64_t iters);           // sdot z.s           32 ops per 128 bits
uint64_t int8_smmla_z__sve(int64_t iters);          // smmla z.s          64 ops per 128 bits
uint64_t bf16_bfmmla_z__sve(int64_t iters);         // bfmmla z.s         32 flops per 128 bits

// Independent accumulators per loop iteration: ymm loops (16 registers) use 12, zmm loops 16,
// tile loops 4 C tiles (of 8 tiles; the other 4 hold 2 A and 2 B).
constexpr int kYmmAccumulators = 12;
constexpr int kZmmAccumulators = 16;
constexpr int kTileAccumulators = 4;
constexpr int kArmAccumulators = 16;

// ---- the driver (probe.cpp) -------------------------------------------------------------------
struct BandwidthResult {
  int threads = 0;
  bool pinned = false;
  std::vector<int> cpus;              // CPU of each thread when pinned
  std::vector<long> thread_ids;       // kernel thread id of each worker (distinct: N threads ran)
  size_t bytes = 0;                   // bytes read per repeat (all threads together)
  std::string loads;                  // "zmm (avx512)", "ymm (avx2)", "64-bit scalar (generic)"
  bool huge_pages_advised = false;
  std::vector<double> gbps;           // one per repeat
  double best_gbps = 0, median_gbps = 0;
};

struct PeakResult {
  std::string name;         // fp32_fma_ymm, fp32_fma_zmm, int8_pmaddubsw_ymm, int8_tdpbusd_tmm, ...
  std::string instruction;  // "vfmadd231ps zmm", "tdpbusd 16x16x64", ...
  std::string unit;         // "GFLOP/s" or "GOP/s"
  std::string isa;          // tier the loop needs
  int ops_per_instruction = 0;
  int accumulators = 0;     // independent registers (tiles for the tile families)
  bool available = false;
  std::string reason;       // why not available
  std::vector<double> rates;  // G ops/s, one per trial
  double best = 0, median = 0;
};

struct PeaksResult {
  int threads = 0;
  bool pinned = false;
  std::vector<int> cpus;
  std::vector<long> thread_ids;
  std::string tier;  // the tier families were checked against
  double seconds_per_family = 0;
  std::vector<PeakResult> families;
};

// pin: true binds thread i to the i-th allowed CPU (wrapping around), false leaves threads to the
// scheduler, nullopt follows the engine's rule (engine_pins).
bool engine_pins(int threads);
// threads >= 1; mib >= 1; repeats >= 1. Throws std::invalid_argument otherwise.
BandwidthResult measure_bandwidth(int threads, size_t mib, int repeats, std::optional<bool> pin);
// Every family, with `available` and `reason` at the active tier, nothing measured.
std::vector<PeakResult> peak_families();
// `only`: names of the families to measure (empty: all); others are left out of the result.
// An unknown name throws std::invalid_argument listing the known ones.
PeaksResult measure_peaks(int threads, double seconds, std::optional<bool> pin,
                          const std::vector<std::string>& only = {});
// Core clock estimate in GHz from a chain of dependent 1-cycle integer adds on one thread: the
// fastest ~0.2 ms chunk of `seconds` of them (chunks the scheduler interrupted read slower).
double measure_clock_ghz(double seconds);

}  // namespace kt::probe
