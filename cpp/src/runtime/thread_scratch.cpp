#include "runtime/thread_scratch.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace kt {

uint8_t* thread_scratch(int slot, size_t bytes) {
  if (slot < 0 || slot >= kScratchSlots)
    throw std::logic_error("thread_scratch slot " + std::to_string(slot) + " is not in [0, " +
                           std::to_string(kScratchSlots) + ")");
  thread_local std::vector<uint8_t> buf[kScratchSlots];
  std::vector<uint8_t>& b = buf[slot];
  if (b.size() < bytes + 63) b.resize(bytes + 63);
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
  return b.data() + ((64 - p % 64) % 64);
}

}  // namespace kt
