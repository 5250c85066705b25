// Per-thread scratch memory for kernels that stage data (the AMX tile kernels gather token rows
// and unpack weights into tile layouts). ISA-free; kernel files call it, they do not own it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kt {

constexpr int kScratchSlots = 4;

// A 64-byte aligned buffer of at least `bytes`, one per (thread, slot), kept for the thread's
// life and grown on demand; its contents are undefined on return.
uint8_t* thread_scratch(int slot, size_t bytes);

}  // namespace kt
