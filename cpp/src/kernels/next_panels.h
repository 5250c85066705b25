// Prefetching the next panels into L2 while a vector kernel computes the current ones, shared by
// the AVX2 and AVX512 drivers (prefetcht1 is baseline x86-64, so one copy serves every ISA flag).
//
// A panel computed in several K passes (row blocks, or halves of the panel) is read from DRAM by
// the first pass only; the others find it in cache and leave the memory idle, so a core's time
// becomes its compute time plus its memory time. Pass q of P prefetches the q-th P-th of the next
// panels instead: step s of the pass (one 64-byte line per matrix) touches at[t] + s * 64 / P
// (16.16 fixed point), so the reads spread over all passes and cover the whole next panels whatever
// P is. (Slices of a power of two, 2^ceil(log2 P), left up to 3/8 of the panel to demand misses
// for P = 3, 5, 6, 7, and slower passes: docs/benchmarks/notes.md.)
#pragma once
#include <xmmintrin.h>

#include <cstddef>
#include <cstdint>

#include "kt/cpu_features.h"

namespace kt {
namespace {

struct NextPanels {
  const uint8_t* at[4] = {nullptr, nullptr, nullptr, nullptr};  // per matrix or panel; nullptr: none
  uint32_t step = 0;                          // bytes per step, 16.16 fixed point: (64 << 16) / P
  bool to_l1 = false;                         // prefetcht0 instead of prefetcht1 (stream_ahead on l1 CPUs)

  // _mm_prefetch, not an asm statement like the AMX driver's: gcc 12 deletes the calls of a
  // function whose only effects are prefetches unless it is inlined early, which this one-line
  // member is (its prefetcht1 are in the kernels' code); the asm prefetch made the avx512_bf16
  // BF16 kernel slower at prefill through its code generation (docs/benchmarks/notes.md).
  inline void touch(int t, int s) const {
    if (!at[t]) return;
    const char* line = reinterpret_cast<const char*>(at[t] + ((size_t(s) * step) >> 16));
    if (to_l1) _mm_prefetch(line, _MM_HINT_T0);
    else _mm_prefetch(line, _MM_HINT_T1);
  }
};

// Pass q of `passes`: the q-th slice of the panels at next[t] (t < nm), or nothing when next[0] is
// nullptr.
inline NextPanels next_panel_slice(const uint8_t* const* next, int nm, size_t panel_bytes, int q, int passes) {
  NextPanels pf;
  if (!next[0]) return pf;
  pf.step = (64u << 16) / uint32_t(passes);
  const size_t start = (panel_bytes * size_t(q) / size_t(passes)) & ~size_t(63);
  for (int t = 0; t < nm; ++t) pf.at[t] = next[t] + start;
  return pf;
}

// A panel computed in one K pass (decode): prefetch each matrix's own stream `distance` bytes ahead
// of the line read, on into the next panel (a matrix's panels are contiguous). The hardware
// prefetcher alone left one AVX2 thread streaming int4 experts at 75% of the VNNI kernel's rate:
// its ymm tile spends twice the instructions per line, so fewer lines are in flight.
// kStreamAhead: the shortest distance that measured as fast as any longer one for the int4 AVX2
// kernels at m=1 (distances from 1 KiB to a whole panel: docs/benchmarks/notes.md). Into L1
// (prefetcht0) on the CPUs whose stream_prefetch() is l1 (Zen 5: int4 at A, M = 8, as fast as
// prefetcht1 or faster; 8 KiB measured alike), else L2.
constexpr size_t kStreamAhead = size_t(4) << 10;

inline NextPanels stream_ahead(const uint8_t* const* cur, int nm, size_t distance) {
  static const bool to_l1 = stream_prefetch() == StreamPrefetch::l1;
  NextPanels pf;
  pf.step = 64u << 16;
  pf.to_l1 = to_l1;
  for (int t = 0; t < nm; ++t) pf.at[t] = cur[t] + distance;
  return pf;
}

}  // namespace
}  // namespace kt
