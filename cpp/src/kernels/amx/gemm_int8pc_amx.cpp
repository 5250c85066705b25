// [NOTE] The AMX hardware instantiation of the int8_pc tile kernel (gemm_int8pc_amx.h): AMX flags,
// called only where kt::cpu_features().amx_permitted (tier amx). Its emulated twin is in
// kernels/amx_emu/gemm_amx_emu.cpp.
#include "kernels/amx/gemm_int8pc_amx.h"
#include "kernels/amx/tile_amx.h"
#include "kernels/kernel_registry.h"

namespace kt {

void gateup_int8pc_q8u_32x16__amx(const GateUpArgs& a) { amx::gateup<amx::TileAmx, amx::Int8PcAmx>(a); }
void down_int8pc_q8u_32x16__amx(const DownArgs& a) { amx::down<amx::TileAmx, amx::Int8PcAmx>(a); }

KT_TILE_ROW(int8_pc, kAvx512Bf16Obj | feature::amx_tile | feature::amx_int8, q8u, int8pc_q8u_32x16__amx, kTileMinMInt8)

}  // namespace kt
