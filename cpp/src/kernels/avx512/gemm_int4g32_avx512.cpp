// [NOTE] int4_g32 and int4_g32_zp weights x q8s activations on AVX512 F/BW without VNNI: the 4-product dot is
// pmaddubsw (u8 x s8 -> s16 pairs, at most 2 * 15 * 127, no saturation) then pmaddwd with ones.
#include "kernels/avx512/int4g32_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct DotMaddubs {
  static __m512i dp(__m512i acc, __m512i w_u8, __m512i a_s8) {
    __m512i pairs = _mm512_maddubs_epi16(w_u8, a_s8);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
  }
};

using Tile = avx512::Int4G32Tile<DotMaddubs, false, ActFormat::q8s>;
using ZeroPointTile = avx512::Int4G32Tile<DotMaddubs, true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_4x16__avx512(const GateUpArgs& a) { avx512::gateup<Tile>(a); }
void down_int4g32_q8s_4x16__avx512(const DownArgs& a) { avx512::down<Tile>(a); }

void gateup_int4g32zp_q8_32_4x16__avx512(const GateUpArgs& a) { avx512::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_4x16__avx512(const DownArgs& a) { avx512::down<ZeroPointTile>(a); }

KT_KERNEL_ROW(int4_g32, kAvx512Obj, q8s, int4g32_q8s_4x16__avx512)
KT_KERNEL_ROW(int4_g32_zp, kAvx512Obj, q8_32, int4g32zp_q8_32_4x16__avx512)

}  // namespace kt
