#include "kt/numa.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace kt {
namespace {

constexpr int kMpolBind = 2;       // linux/mempolicy.h MPOL_BIND
constexpr unsigned kMpolMfMove = 1u << 1;  // MPOL_MF_MOVE: move this process's pages already there

size_t page_size() {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

void bind_memory(void* p, size_t bytes, int node) {
  if (node < 0 || node >= 1024) throw std::invalid_argument("memory node " + std::to_string(node) + " out of range");
  const uintptr_t page = page_size();
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes + page - 1) & ~(page - 1);
  unsigned long mask[1024 / (8 * sizeof(unsigned long))] = {};
  mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
  if (syscall(SYS_mbind, b, e - b, kMpolBind, mask, 1024ul, kMpolMfMove) != 0)
    throw std::runtime_error("mbind to memory node " + std::to_string(node) + " failed: " + std::strerror(errno) +
                             " (a container may need CAP_SYS_NICE for it; numa_nodes=None leaves memory unbound)");
}

std::vector<int> page_nodes(const void* p, size_t bytes) {
  const uintptr_t page = page_size();
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const size_t n = (reinterpret_cast<uintptr_t>(p) + bytes - b + page - 1) / page;
  std::vector<void*> pages(n);
  for (size_t i = 0; i < n; ++i) pages[i] = reinterpret_cast<void*>(b + i * page);
  std::vector<int> status(n, -1);
  if (n && syscall(SYS_move_pages, 0, n, pages.data(), nullptr, status.data(), 0) != 0)
    throw std::runtime_error(std::string("move_pages (page node query) failed: ") + std::strerror(errno));
  return status;
}

}  // namespace kt
