#include "runtime/host_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

namespace kt {

void FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

HostBuffer alloc_weights(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  if (rounded == 0) rounded = kHuge;
  void* p = std::aligned_alloc(kHuge, rounded);
  if (!p)
    throw std::runtime_error("cannot allocate " + std::to_string(bytes >> 20) + " MiB of host memory for expert weights");
  madvise(p, rounded, MADV_HUGEPAGE);  // advisory: ignored where THP is off
  return HostBuffer(static_cast<uint8_t*>(p));
}

}  // namespace kt
