// [NOTE] The AMX hardware instantiation of the bf16 tile kernel (gemm_bf16_amx.h): AMX flags,
// called only where kt::cpu_features().amx_permitted (tier amx). Its emulated twin is in
// kernels/amx_emu/gemm_amx_emu.cpp.
#include "kernels/amx/gemm_bf16_amx.h"
#include "kernels/amx/tile_amx.h"
#include "kernels/kernel_registry.h"

namespace kt {

void gateup_bf16_bf16_32x16__amx(const GateUpArgs& a) { amx::gateup<amx::TileAmx, amx::Bf16Amx>(a); }
void down_bf16_bf16_32x16__amx(const DownArgs& a) { amx::down<amx::TileAmx, amx::Bf16Amx>(a); }

KT_TILE_ROW(bf16, kAvx512Bf16Obj | feature::amx_tile | feature::amx_bf16, bf16, bf16_bf16_32x16__amx, kTileMinMBf16)

}  // namespace kt
