// Routing buckets: the (token, weight) pairs of each CPU expert slot, grouped by slot.
#pragma once
#include <cstdint>
#include <vector>

namespace kt {

struct Buckets {
  std::vector<int32_t> experts;  // active CPU slots, most tokens first (larger tasks scheduled first)
  std::vector<int32_t> offset;   // rows of experts[j] are [offset[j], offset[j] + count[j])
  std::vector<int32_t> count;
  std::vector<int32_t> tok;      // per row: token index within the chunk
  std::vector<float> weight;     // per row: routing weight
  std::vector<int32_t> by_slot;  // bucket indices in slot order: the order in which a token's
                                 // expert outputs are summed, the same whatever the batch
  std::vector<int32_t> per_slot; // scratch: rows per slot
  int rows() const { return int(tok.size()); }
};

// ids: [M, topk] int32, already validated to be -1 or a slot in [0, on_cpu.size()).
void build_buckets(const int32_t* ids, const float* weights, int M, int topk,
                   const std::vector<uint8_t>& on_cpu, Buckets* b);

}  // namespace kt
