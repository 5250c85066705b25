// NUMA placement by the Linux system calls themselves (mbind, move_pages), not libnuma: two calls
// and two constants are all kt_kernel needs, and a library that may be missing at run time would
// add a failure mode for nothing (docs/design.md, "NUMA").
#pragma once
#include <cstddef>
#include <vector>

namespace kt {

// Where one sub-pool runs: the CPUs its threads are pinned to and the node its weights live on
// (-1: none, the kernel's default policy).
struct PoolPlacement {
  std::vector<int> cpus;
  int mem_node = -1;
  bool operator==(const PoolPlacement&) const = default;
  bool operator<(const PoolPlacement& o) const {
    return cpus != o.cpus ? cpus < o.cpus : mem_node < o.mem_node;
  }
};

// Binds [p, p + bytes) (page aligned) to memory node `node` before its pages are first touched
// (MPOL_BIND; pages already present are moved). Throws std::runtime_error naming the node and errno.
void bind_memory(void* p, size_t bytes, int node);

// The node of each page of [p, p + bytes) (move_pages with no target: a query); a page not yet
// present reads as -ENOENT (negative).
std::vector<int> page_nodes(const void* p, size_t bytes);

}  // namespace kt
