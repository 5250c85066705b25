// [NOTE] The hardware instantiation of the shared tile GEMM (tile_gemm.h) with TileAmx. Compiled
// with the AMX flags so that the AMX code path is built on every host; it runs only where
// kt::cpu_features().amx_permitted (the binding checks), and tests compare it with the emulator.
#include "kernels/amx/tile_amx.h"
#include "kernels/amx/tile_gemm.h"

namespace kt::amx {

void tile_gemm_s8s8_16x16__amx(const int8_t* a, size_t lda, const int8_t* bp, int32_t* c, size_t ldc,
                               int M, int K) {
  tile_gemm_s8s8_16x16<TileAmx>(a, lda, bp, c, ldc, M, K);
}

}  // namespace kt::amx
