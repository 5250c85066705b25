// [NOTE] int8_pc weights x q8u activations on AMX tiles (driver: amx_moe_driver.h). tdpbusd takes
// the activations (q + 128, unsigned) as A and the weights (signed) as B, the same products as
// vpdpbusd in the AVX512-VNNI kernel; the int32 sums are exact on both, and the epilogue is that
// kernel's, in its order:
//   y = cvt(isum - comp) * (s_w * s_a),  comp = 128 sum_k q_w    (both from the packed panel)
//
// The packed panel (formats/int8_pc.cpp) already is the B-tile layout: 16 steps of 64 bytes are
// one 16 x 64 B tile covering 64 k of 16 channels, dword [s][c] = q[c, 4s..4s+3] (VNNI):
//
//   panel   | step 0: c0 q q q q | c1 q q q q | ... | c15 q q q q |   <- B tile row 0  --+
//           | step 1: ...                                         |   <- B tile row 1    | K step 0
//           | ...                                                 |                      | (k 0..63)
//           | step 15                                             |   <- B tile row 15 --+
//           | step 16 ... (K step 1: k 64..127) ...               |
//           | scale: 16 x fp32 | comp: 16 x int32                 |
//
//   A tile: 16 token rows x 64 bytes (q8u of k 64s..64s+63)       C tile: 16 rows x 16 int32
//
// A panel whose Kp is not a multiple of 64 is copied with its last step zero-padded to 16 rows.
#pragma once
#include "kernels/amx/amx_moe_driver.h"

namespace kt::amx {
namespace {

struct Int8PcAmx {
  static constexpr int a_colsb = 64, b_rows = 16;
  static constexpr size_t b_step_bytes = 1024;
  static constexpr bool per_step = false;

  static int steps(int Kp) { return (Kp + 63) / 64; }
  static size_t act_bytes(int Kp) { return size_t(Kp); }

  template <class Tiles, int C, int A, int B>
  static void tdp() { Tiles::template dpbusd<C, A, B>(); }

  static const uint8_t* b_tiles(const uint8_t* panel, int Kp, uint8_t* buf) {
    if (Kp % 64 == 0) return panel;
    const size_t n = size_t(Kp) * kPanelN;
    std::memcpy(buf, panel, n);
    std::memset(buf + n, 0, b_step_bytes * steps(Kp) - n);
    return buf;
  }

  static __m512 finish(const int32_t* c, const uint8_t* panel, int Kp, const ActView& act, int row) {
    const Int8PcTail* tail = int8pc_tail(panel, Kp);
    const __m512 sw = _mm512_loadu_ps(tail->scale);
    const __m512i comp = _mm512_loadu_si512(tail->comp);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(c), comp)),
                         _mm512_mul_ps(sw, _mm512_set1_ps(act.scale[row])));
  }
};

}  // namespace
}  // namespace kt::amx
