// The tile-backend interface that AMX kernels are written against, once. ISA-free header.
//
// A kernel is a template over a Tiles backend and calls only these static members (tile numbers
// are template arguments because the hardware encodes them in the instruction):
//   Tiles::config(const TileConfig&)                      ldtilecfg
//   Tiles::release()                                      tilerelease
//   Tiles::template load<T>(const void* base, size_t stride)    tileloadd  tmmT, [base + stride*row]
//   Tiles::template store<T>(void* base, size_t stride)         tilestored [base + stride*row], tmmT
//   Tiles::template store<T>(int32_t (&c)[16][16])              the same for a whole C tile into c
//   Tiles::template zero<T>()                             tilezero   tmmT
//   Tiles::template dpbssd<C, A, B>()  (and dpbsud, dpbusd, dpbuud)   C[m][n] += A[m][k] . B[k][n]
//   Tiles::template dpbf16ps<C, A, B>()                   the same over bf16 pairs into fp32
// Two backends implement it:
//   TileAmx  kernels/amx/tile_amx.h        the instructions; included only by files compiled with the
//                                          AMX flags (KT_AMX_SOURCES), run only when
//                                          kt::cpu_features().amx_permitted
//   TileEmu  kernels/amx_emu/tile_emu.h    a software model of the Intel SDM pseudocode, built with
//                                          no ISA flags (tests; any x86-64 CPU)
// Dispatch picks the backend with the kernel row: a TileAmx row needs the amx_tile feature, its
// TileEmu twin amx_tile_emu (kt/cpu_features.h), which only the test-only "amx_emu" set holds.
//
// Tile shapes, palette 1: 8 tiles (tmm0..tmm7) of at most 16 rows x 64 bytes. For
// dp*(C, A, B): A is M x K dwords (rows M, colsb 4K), B is K x N dwords (rows K, colsb 4N) whose
// dword [k][n] holds the 4 (int8) or 2 (bf16) consecutive k of column n (VNNI layout), C is
// M x N dwords (rows M, colsb 4N).
#pragma once
#include <cstddef>
#include <cstdint>

namespace kt::amx {

constexpr int kNumTiles = 8;       // palette 1: max_names
constexpr int kTileMaxRows = 16;   // palette 1: max_rows
constexpr int kTileMaxColsb = 64;  // palette 1: bytes_per_row
constexpr int kTileBytes = 1024;   // palette 1: bytes_per_tile

// The 64-byte memory operand of ldtilecfg/sttilecfg (Intel SDM vol. 2, LDTILECFG, table
// "Tile Configuration"). Entries 8..15 must be zero for palette 1. A tile with rows == 0 and
// colsb == 0 is unconfigured.
struct alignas(64) TileConfig {
  uint8_t palette_id = 0;     // byte 0: 0 = release all tiles (INIT state), 1 = 8 x 1 KiB tiles
  uint8_t start_row = 0;      // byte 1: restart row of an interrupted tileloadd/tilestored
  uint8_t reserved[14] = {};  // bytes 2..15: must be zero
  uint16_t colsb[16] = {};    // bytes 16..47: bytes per row of tile i
  uint8_t rows[16] = {};      // bytes 48..63: rows of tile i
};
static_assert(sizeof(TileConfig) == 64, "TileConfig is ldtilecfg's 64-byte memory operand");
static_assert(offsetof(TileConfig, colsb) == 16 && offsetof(TileConfig, rows) == 48,
              "TileConfig field offsets follow the SDM layout");

}  // namespace kt::amx
