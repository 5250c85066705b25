// [NOTE] int4_g32 and int4_g32_zp weights x q8s activations with AVX512-VNNI: the 4-product dot is one vpdpbusd
// (weights are the unsigned operand, activations the signed one).
#include "kernels/avx512/int4g32_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct DotVnni {
  static __m512i dp(__m512i acc, __m512i w_u8, __m512i a_s8) { return _mm512_dpbusd_epi32(acc, w_u8, a_s8); }
};

using Tile = avx512::Int4G32Tile<DotVnni, false, ActFormat::q8s>;
using ZeroPointTile = avx512::Int4G32Tile<DotVnni, true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_4x16__avx512vnni(const GateUpArgs& a) { avx512::gateup<Tile>(a); }
void down_int4g32_q8s_4x16__avx512vnni(const DownArgs& a) { avx512::down<Tile>(a); }

void gateup_int4g32zp_q8_32_4x16__avx512vnni(const GateUpArgs& a) { avx512::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_4x16__avx512vnni(const DownArgs& a) { avx512::down<ZeroPointTile>(a); }

KT_KERNEL_ROW(int4_g32, kAvx512VnniObj, q8s, int4g32_q8s_4x16__avx512vnni)
KT_KERNEL_ROW(int4_g32_zp, kAvx512VnniObj, q8_32, int4g32zp_q8_32_4x16__avx512vnni)

}  // namespace kt
