// Host memory for packed weights: 2 MiB aligned and advised for transparent huge pages, which
// raised the read bandwidth of the small VMs this was measured on (docs/benchmarks/notes.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kt {

struct FreeDeleter {
  void operator()(uint8_t* p) const;
};
using HostBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

// Throws std::bad_alloc with the size in the message when the allocation fails.
HostBuffer alloc_weights(size_t bytes);

}  // namespace kt
