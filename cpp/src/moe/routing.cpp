#include "moe/routing.h"

#include <algorithm>

namespace kt {

void build_buckets(const int32_t* ids, const float* weights, int M, int topk,
                   const std::vector<uint8_t>& on_cpu, Buckets* b) {
  const int E = int(on_cpu.size());
  b->per_slot.assign(E, 0);
  for (int i = 0; i < M * topk; ++i)
    if (ids[i] >= 0 && on_cpu[ids[i]]) ++b->per_slot[ids[i]];
  std::vector<int32_t>& in_slot_order = b->by_slot;  // active slots, then their bucket indices
  in_slot_order.clear();
  for (int e = 0; e < E; ++e)
    if (b->per_slot[e]) in_slot_order.push_back(e);
  b->experts = in_slot_order;
  std::stable_sort(b->experts.begin(), b->experts.end(),
                   [&](int x, int y) { return b->per_slot[x] > b->per_slot[y]; });
  const int n = int(b->experts.size());
  b->offset.resize(n);
  b->count.resize(n);
  int rows = 0;
  for (int j = 0; j < n; ++j) {
    b->offset[j] = rows;
    b->count[j] = 0;
    rows += b->per_slot[b->experts[j]];
  }
  // per_slot becomes the slot -> bucket index map
  for (int j = 0; j < n; ++j) b->per_slot[b->experts[j]] = j;
  for (int32_t& v : in_slot_order) v = b->per_slot[v];
  b->tok.resize(rows);
  b->weight.resize(rows);
  for (int t = 0; t < M; ++t)
    for (int k = 0; k < topk; ++k) {
      int e = ids[t * topk + k];
      if (e < 0 || !on_cpu[e]) continue;
      int j = b->per_slot[e];
      int r = b->offset[j] + b->count[j]++;
      b->tok[r] = t;
      b->weight[r] = weights[t * topk + k];
    }
}

}  // namespace kt
