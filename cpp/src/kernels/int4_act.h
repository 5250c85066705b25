// The activations an int4_g32-family kernel reads, group g (32 k) of a row at a time:
//   q8s    one int8 row, one scale per row (applied once, after the sum); act.gsum holds each
//          group's sum of q (int4_g32, method AMXINT4)
//   q8_32  ActQ8x32 blocks (kt/gguf_blocks.h): a scale and a sum of q per group, so the scale
//          applies per group (int4_g32_zp, the int4 releases: about half the activations'
//          rounding error of one scale per row, docs/benchmarks/notes.md)
// Plain C++: every tier's kernel file includes it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kt/gguf_blocks.h"
#include "kt/kernels.h"

namespace kt {

template <ActFormat kAct>
struct Int4Act {
  static_assert(kAct == ActFormat::q8s || kAct == ActFormat::q8_32, "int4 kernels read q8s or q8_32");
  static constexpr bool kGroupScale = kAct == ActFormat::q8_32;

  static const uint8_t* row_of(const ActView& a, int row) { return a.data + a.stride * size_t(row); }
  // the 32 int8 of group g
  static const int8_t* q(const ActView& a, int row, int g) {
    if constexpr (kGroupScale) return reinterpret_cast<const ActQ8x32*>(row_of(a, row))[g].q;
    else return reinterpret_cast<const int8_t*>(row_of(a, row)) + size_t(g) * kQ8Group;
  }
  // their sum
  static int32_t sum(const ActView& a, int row, int g) {
    if constexpr (kGroupScale) return reinterpret_cast<const ActQ8x32*>(row_of(a, row))[g].sum;
    else return a.gsum[size_t(a.gsum_stride) * row + g];
  }
  // the group's scale (q8_32) and the row's (q8s)
  static float group_scale(const ActView& a, int row, int g) {
    if constexpr (kGroupScale) return reinterpret_cast<const ActQ8x32*>(row_of(a, row))[g].d;
    else return 1.f;
  }
  static float row_scale(const ActView& a, int row) {
    if constexpr (kGroupScale) return 1.f;
    else return a.scale[row];
  }
};

}  // namespace kt
