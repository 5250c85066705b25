// [NOTE] Test-only: the AMX tile kernels (kernels/amx/gemm_*_amx.h) instantiated on the tile
// emulator (TileEmu, tile_emu.h). Compiled with the AVX512 flags of the avx512_bf16 tier and no
// AMX flags: the tiles run in software, the gather and the epilogues are the AVX512 code of the
// hardware kernels. Their rows (emulated_kernel_table) need the amx_tile_emu feature, which only
// the "amx_emu" set forced with kt_kernel.set_isa("amx_emu") or KT_KERNEL_ISA=amx_emu holds; it
// needs the avx512_bf16 tier. Slow (a tdp takes microseconds).
#include "kernels/amx/gemm_bf16_amx.h"
#include "kernels/amx/gemm_int4g32_amx.h"
#include "kernels/amx/gemm_int8pc_amx.h"
#include "kernels/amx_emu/tile_emu.h"
#include "kernels/kernel_registry.h"

namespace kt {

void gateup_int8pc_q8u_32x16__amx_emu(const GateUpArgs& a) { amx::gateup<amx::TileEmu, amx::Int8PcAmx>(a); }
void down_int8pc_q8u_32x16__amx_emu(const DownArgs& a) { amx::down<amx::TileEmu, amx::Int8PcAmx>(a); }
void gateup_int4g32_q8s_32x16__amx_emu(const GateUpArgs& a) {
  amx::gateup<amx::TileEmu, amx::Int4G32Amx<false, ActFormat::q8s>>(a);
}
void down_int4g32_q8s_32x16__amx_emu(const DownArgs& a) { amx::down<amx::TileEmu, amx::Int4G32Amx<false, ActFormat::q8s>>(a); }
void gateup_int4g32zp_q8_32_32x16__amx_emu(const GateUpArgs& a) {
  amx::gateup<amx::TileEmu, amx::Int4G32Amx<true, ActFormat::q8_32>>(a);
}
void down_int4g32zp_q8_32_32x16__amx_emu(const DownArgs& a) {
  amx::down<amx::TileEmu, amx::Int4G32Amx<true, ActFormat::q8_32>>(a);
}
void gateup_bf16_bf16_32x16__amx_emu(const GateUpArgs& a) { amx::gateup<amx::TileEmu, amx::Bf16Amx>(a); }
void down_bf16_bf16_32x16__amx_emu(const DownArgs& a) { amx::down<amx::TileEmu, amx::Bf16Amx>(a); }

KT_EMULATED_TILE_ROW(int8_pc, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_int8, q8u, int8pc_q8u_32x16__amx_emu, kTileMinMInt8)
KT_EMULATED_TILE_ROW(int4_g32, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_int8, q8s, int4g32_q8s_32x16__amx_emu, kTileMinMInt4)
KT_EMULATED_TILE_ROW(int4_g32_zp, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_int8, q8_32, int4g32zp_q8_32_32x16__amx_emu, kTileMinMInt4)
KT_EMULATED_TILE_ROW(bf16, kAvx512Bf16Obj | feature::amx_tile_emu | feature::amx_bf16, bf16, bf16_bf16_32x16__amx_emu, kTileMinMBf16)

}  // namespace kt
