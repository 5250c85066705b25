// [NOTE] The smallest tile GEMM, written once over the tile backend (tile_backend.h) and compiled
// twice: with TileAmx in kernels/amx/amx_selftest.cpp (AMX flags) and with TileEmu in
// kernels/amx_emu/tile_emu.cpp (no ISA flags). It fixes the pattern the MoE kernels will follow;
// it is not a production kernel (no blocking over N, no epilogue).
//
//   C[M x 16] int32 = A[M x K] s8 . B[K x 16] s8      M <= 16, K % 4 == 0, with tdpbssd
//
// B is packed in the VNNI layout: K/4 rows of 16 dwords, dword [r][n] = B[4r .. 4r+3][n]:
//
//            n=0          n=1                n=15
//   row 0   [b00 b10 b20 b30][b01 b11 b21 b31] ... [b0F b1F b2F b3F]     64 bytes
//   row 1   [b40 b50 b60 b70] ...                                        64 bytes
//   ...     (K/4 rows; bij = B[i][j])
//
// Tiles (one ldtilecfg for the whole call):
//   tmm0  C         M rows  x 64 bytes
//   tmm1  A block   M rows  x 64 bytes (16 k)      tmm2  B block   16 rows   x 64 bytes
//   tmm3  A tail    M rows  x Kt bytes             tmm4  B tail    Kt/4 rows x 64 bytes
//   (Kt = K % 64; tmm3/tmm4 are configured only when Kt > 0)
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/amx/tile_backend.h"

namespace kt::amx {

// The two instantiations. Callers check M in [1, 16], K >= 4, K % 4 == 0; the AMX one may be
// called only when kt::cpu_features().amx_permitted.
void tile_gemm_s8s8_16x16__amx(const int8_t* a, size_t lda, const int8_t* bp, int32_t* c, size_t ldc,
                               int M, int K);
void tile_gemm_s8s8_16x16__emu(const int8_t* a, size_t lda, const int8_t* bp, int32_t* c, size_t ldc,
                               int M, int K);

namespace {

template <class Tiles>
void tile_gemm_s8s8_16x16(const int8_t* a, size_t lda, const int8_t* bp, int32_t* c, size_t ldc, int M,
                          int K) {
  const int Kt = K % 64;
  TileConfig cfg;
  cfg.palette_id = 1;
  cfg.rows[0] = uint8_t(M), cfg.colsb[0] = 64;
  cfg.rows[1] = uint8_t(M), cfg.colsb[1] = 64;
  cfg.rows[2] = 16, cfg.colsb[2] = 64;
  if (Kt > 0) {
    cfg.rows[3] = uint8_t(M), cfg.colsb[3] = uint16_t(Kt);
    cfg.rows[4] = uint8_t(Kt / 4), cfg.colsb[4] = 64;
  }
  Tiles::config(cfg);
  // stage 1: C = 0
  Tiles::template zero<0>();
  // stage 2: C += A[:, k0:k0+64] . B[k0:k0+64, :] for each whole block of 64 k
  for (int k0 = 0; k0 + 64 <= K; k0 += 64) {
    Tiles::template load<1>(a + k0, /*stride=*/lda);
    Tiles::template load<2>(bp + size_t(k0 / 4) * 64, /*stride=*/64);
    Tiles::template dpbssd<0, 1, 2>();
  }
  // stage 3: the K tail, Kt bytes of A per row and Kt/4 packed rows of B
  if (Kt > 0) {
    const int k0 = K - Kt;
    Tiles::template load<3>(a + k0, /*stride=*/lda);
    Tiles::template load<4>(bp + size_t(k0 / 4) * 64, /*stride=*/64);
    Tiles::template dpbssd<0, 3, 4>();
  }
  // stage 4: store C (M rows of 16 int32)
  Tiles::template store<0>(c, /*stride=*/ldc * sizeof(int32_t));
  Tiles::release();
}

}  // namespace
}  // namespace kt::amx
