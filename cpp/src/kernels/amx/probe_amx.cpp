// [NOTE] Machine-limit probe loops for the amx tier (driven by cpp/src/probe/probe.cpp); called only
// where that tier is active, so kt::cpu_features().amx_permitted (arch_prctl done) holds.
//   int8_tdpbusd_tmm__amx:    C_ij += A_i . B_j (tdpbusd, u8 x s8 into int32) for i, j in {0, 1}:
//                             one instruction = 16 x 16 x 64 = 16384 multiply-adds = 32768 ops.
//   bf16_tdpbf16ps_tmm__amx:  the same with tdpbf16ps (bf16 pairs into fp32): 16 x 16 x 32 = 8192
//                             multiply-adds = 16384 flops.
// Tiles, all 16 rows x 64 bytes:
//   tmm0 tmm1 tmm2 tmm3   C00 C01 C10 C11   4 independent accumulator chains (hide the latency)
//   tmm4 tmm5             A0 A1             loaded once per call, before the loop
//   tmm6 tmm7             B0 B1             loaded once per call, before the loop
// The loop body is the four tdp instructions alone: it measures the tile unit, not loads or stores.
// Each call configures the tiles (ldtilecfg) and releases them (tilerelease) at its end, so a call
// leaves no tile state behind and needs none from its caller; the driver calls a loop for about
// 1 ms at a time, next to which that set-up (well under a microsecond) is noise.
#include "kernels/amx/tile_amx.h"
#include "probe/probe.h"

namespace kt::probe {
namespace {

using amx::TileAmx;

// Two 16 x 64-byte tiles of `value` each: A0, A1 (or B0, B1) one after the other.
template <class T>
struct TilePair {
  alignas(64) T v[2 * amx::kTileBytes / sizeof(T)];
  explicit TilePair(T value) {
    for (T& x : v) x = value;
  }
  const void* tile(int i) const { return reinterpret_cast<const char*>(v) + i * amx::kTileBytes; }
};

amx::TileConfig all_tiles_16x64() {
  amx::TileConfig cfg;
  cfg.palette_id = 1;
  for (int t = 0; t < amx::kNumTiles; ++t) {
    cfg.rows[t] = amx::kTileMaxRows;
    cfg.colsb[t] = amx::kTileMaxColsb;
  }
  return cfg;
}

// The instruction of each family, over tile numbers.
struct Tdpbusd {
  template <int C, int A, int B>
  static void run() { TileAmx::dpbusd<C, A, B>(); }
};
struct Tdpbf16ps {
  template <int C, int A, int B>
  static void run() { TileAmx::dpbf16ps<C, A, B>(); }
};

// Loads A and B, runs `iters` x (Tdp into each of C00..C11), stores C and releases the tiles.
// Returns the sum of one dword of each C tile.
template <class Tdp, class Elem>
uint64_t tile_loop(int64_t iters, Elem a_value, Elem b_value) {
  static_assert(kTileAccumulators == 4, "the loop below keeps 4 C tiles");
  const TilePair<Elem> a(a_value), b(b_value);
  TileAmx::config(all_tiles_16x64());
  TileAmx::zero<0>();
  TileAmx::zero<1>();
  TileAmx::zero<2>();
  TileAmx::zero<3>();
  TileAmx::load<4>(a.tile(0), /*stride=*/amx::kTileMaxColsb);
  TileAmx::load<5>(a.tile(1), /*stride=*/amx::kTileMaxColsb);
  TileAmx::load<6>(b.tile(0), /*stride=*/amx::kTileMaxColsb);
  TileAmx::load<7>(b.tile(1), /*stride=*/amx::kTileMaxColsb);
  for (int64_t i = 0; i < iters; ++i) {
    Tdp::template run</*C=*/0, /*A=*/4, /*B=*/6>();
    Tdp::template run</*C=*/1, /*A=*/4, /*B=*/7>();
    Tdp::template run</*C=*/2, /*A=*/5, /*B=*/6>();
    Tdp::template run</*C=*/3, /*A=*/5, /*B=*/7>();
  }
  alignas(64) uint32_t c[kTileAccumulators][amx::kTileBytes / 4];
  TileAmx::store<0>(c[0], /*stride=*/amx::kTileMaxColsb);
  TileAmx::store<1>(c[1], /*stride=*/amx::kTileMaxColsb);
  TileAmx::store<2>(c[2], /*stride=*/amx::kTileMaxColsb);
  TileAmx::store<3>(c[3], /*stride=*/amx::kTileMaxColsb);
  TileAmx::release();
  return uint64_t(c[0][0]) + c[1][0] + c[2][0] + c[3][0];
}

}  // namespace

uint64_t int8_tdpbusd_tmm__amx(int64_t iters) {
  // A = u8 3, B = s8 -2: every C dword changes by 64 x -6 per instruction (int32, wrapping).
  return tile_loop<Tdpbusd, uint8_t>(iters, /*a_value=*/3, /*b_value=*/0xfe);
}

uint64_t bf16_tdpbf16ps_tmm__amx(int64_t iters) {
  // A = B = bf16 ~1e-3 (0x3a83): a C float grows by 32e-6 per instruction, and stays finite
  // (where it grows too large to change, it stops).
  return tile_loop<Tdpbf16ps, uint16_t>(iters, /*a_value=*/0x3a83, /*b_value=*/0x3a83);
}

}  // namespace kt::probe
