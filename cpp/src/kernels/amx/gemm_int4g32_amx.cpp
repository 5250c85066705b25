// [NOTE] The AMX hardware instantiations of the int4_g32 and int4_g32_zp tile kernel (gemm_int4g32_amx.h): AMX
// flags, called only where kt::cpu_features().amx_permitted (tier amx). Its emulated twin is in
// kernels/amx_emu/gemm_amx_emu.cpp.
#include "kernels/amx/gemm_int4g32_amx.h"
#include "kernels/amx/tile_amx.h"
#include "kernels/kernel_registry.h"

namespace kt {

void gateup_int4g32_q8s_32x16__amx(const GateUpArgs& a) { amx::gateup<amx::TileAmx, amx::Int4G32Amx<false, ActFormat::q8s>>(a); }
void down_int4g32_q8s_32x16__amx(const DownArgs& a) { amx::down<amx::TileAmx, amx::Int4G32Amx<false, ActFormat::q8s>>(a); }
void gateup_int4g32zp_q8_32_32x16__amx(const GateUpArgs& a) {
  amx::gateup<amx::TileAmx, amx::Int4G32Amx<true, ActFormat::q8_32>>(a);
}
void down_int4g32zp_q8_32_32x16__amx(const DownArgs& a) { amx::down<amx::TileAmx, amx::Int4G32Amx<true, ActFormat::q8_32>>(a); }

KT_TILE_ROW(int4_g32, kAvx512Bf16Obj | feature::amx_tile | feature::amx_int8, q8s, int4g32_q8s_32x16__amx, kTileMinMInt4)
KT_TILE_ROW(int4_g32_zp, kAvx512Bf16Obj | feature::amx_tile | feature::amx_int8, q8_32, int4g32zp_q8_32_32x16__amx,
            kTileMinMInt4)

}  // namespace kt
