// The hardware tile backend (see tile_backend.h): AMX-TILE / AMX-INT8 / AMX-BF16 instructions.
// Include ONLY from files compiled with the AMX flags (KT_AMX_SOURCES in CMakeLists.txt), and call
// only when kt::cpu_features().amx_permitted (which includes the Linux arch_prctl permission).
// Everything here has internal linkage (see avx512_driver.h for why).
//
// gcc's _tile_loadd/_tile_dpbssd/... macros stringify their tile arguments ("%%tmm"#dst), so they
// cannot take a template parameter; these members emit the same instructions with the tile number
// as an immediate operand ("%c" prints it bare): tdpbssd %tmmB, %tmmA, %tmmC in AT&T order.
#pragma once
#include <immintrin.h>

#include "kernels/amx/tile_backend.h"

namespace kt::amx {
namespace {

struct TileAmx {
  static constexpr size_t kSpanBytes = size_t(1) << 24;
  static void config(const TileConfig& c) { _tile_loadconfig(&c); }
  static void release() { _tile_release(); }

  // A tile load names what it reads, and a C-tile store what it writes, as memory operands
  // instead of a "memory" clobber, which makes the compiler write back and reload every value it
  // keeps in memory around each tile instruction (the int4 kernel, whose epilogue runs between
  // tile instructions on every K step: 4-6% faster). A load reads up to 16 rows of a region of at
  // most kSpanBytes.
  struct Span {
    char bytes[kSpanBytes];
  };
  template <int T>
  static void load(const void* base, size_t stride) {
    static_assert(0 <= T && T < kNumTiles);
    asm volatile("tileloadd (%1,%2,1), %%tmm%c3" ::"m"(*static_cast<const Span*>(base)), "r"(base), "r"(long(stride)),
                 "i"(T));
  }
  template <int T>
  static void store(void* base, size_t stride) {
    static_assert(0 <= T && T < kNumTiles);
    asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(base), "r"(long(stride)), "i"(T) : "memory");
  }
  // a whole C tile, 16 rows of 64 bytes, into c
  template <int T>
  static void store(int32_t (&c)[16][16]) {
    static_assert(0 <= T && T < kNumTiles);
    asm volatile("tilestored %%tmm%c2, (%1,%3,1)" : "=m"(c) : "r"(&c[0][0]), "i"(T), "r"(64L));
  }
  template <int T>
  static void zero() {
    static_assert(0 <= T && T < kNumTiles);
    asm volatile("tilezero %%tmm%c0" ::"i"(T));
  }

#define KT_AMX_TDP(name)                                                                   \
  template <int C, int A, int B>                                                           \
  static void name() {                                                                     \
    static_assert(0 <= C && C < kNumTiles && 0 <= A && A < kNumTiles && 0 <= B && B < kNumTiles); \
    static_assert(C != A && C != B && A != B, #name ": the three tiles must differ (#UD)"); \
    asm volatile("t" #name " %%tmm%c0, %%tmm%c1, %%tmm%c2" ::"i"(B), "i"(A), "i"(C));      \
  }
  KT_AMX_TDP(dpbssd)
  KT_AMX_TDP(dpbsud)
  KT_AMX_TDP(dpbusd)
  KT_AMX_TDP(dpbuud)
  KT_AMX_TDP(dpbf16ps)
#undef KT_AMX_TDP
};

}  // namespace
}  // namespace kt::amx
