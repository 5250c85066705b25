// How the vector drivers (AVX2, AVX512) cut an expert's m rows into row blocks of at most MR.
#pragma once
#include <cstdint>

namespace kt {
namespace {

// ceil(m / MR) blocks of sizes that differ by at most one (m = 9, MR = 8: 5 + 4, not 8 + 1; m = 5,
// MR = 4: 3 + 2): a small block has too few accumulators to hide the multiply-add latency, and on
// AVX2 a block of 1-2 int4 rows makes one pass where a larger one makes two. Block b starts here.
inline int block_start(int m, int blocks, int b) { return int(int64_t(m) * b / blocks); }

}  // namespace
}  // namespace kt
