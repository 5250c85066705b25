// The software tile backend (see kernels/amx/tile_backend.h): a model of the AMX instructions as
// the Intel SDM's pseudocode defines them, built with NO ISA flags, for tests on any x86-64 CPU.
// State (the tile configuration and 8 x 1 KiB tile registers) is per thread, as the hardware's is.
// An instruction the SDM says faults (#GP for ldtilecfg, #UD for the others) throws TileFault
// (a std::invalid_argument: ValueError in Python) naming the values, and changes no state.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/amx/tile_backend.h"

namespace kt::amx {

struct TileFault : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class TdpOp : int { dpbssd, dpbsud, dpbusd, dpbuud, dpbf16ps };

// The emulated instructions with run-time tile numbers (the bindings drive these directly).
namespace emu {
void ldtilecfg(const TileConfig& cfg);
void sttilecfg(TileConfig* cfg);
void tilerelease();
void tileloadd(int t, const void* base, size_t stride);
void tilestored(int t, void* base, size_t stride);
void tilezero(int t);
void tdp(TdpOp op, int c, int a, int b);
// The raw 1 KiB of tile t, 16 rows x 64 bytes, whatever its configuration (tests read the
// bytes the SDM says are zeroed). Needs no configuration.
void read_register(int t, uint8_t* dst);
// Test hook, no instruction: overwrite the raw 1 KiB of tile t (to make stale bytes outside the
// configured shape visible: the SDM's instructions zero them, ldtilecfg alone never leaves any).
void write_register(int t, const uint8_t* src);
const char* op_name(TdpOp op);
}  // namespace emu

// Internal linkage, as TileAmx: the flagged kernel files that instantiate kernels with it must not
// export inline members that the ISA-free emulator tests could bind to.
namespace {
struct TileEmu {
  static void config(const TileConfig& c) { emu::ldtilecfg(c); }
  static void release() { emu::tilerelease(); }
  template <int T>
  static void load(const void* base, size_t stride) { emu::tileloadd(T, base, stride); }
  template <int T>
  static void store(void* base, size_t stride) { emu::tilestored(T, base, stride); }
  template <int T>
  static void store(int32_t (&c)[16][16]) { emu::tilestored(T, c, 64); }
  template <int T>
  static void zero() { emu::tilezero(T); }
  template <int C, int A, int B>
  static void dpbssd() { emu::tdp(TdpOp::dpbssd, C, A, B); }
  template <int C, int A, int B>
  static void dpbsud() { emu::tdp(TdpOp::dpbsud, C, A, B); }
  template <int C, int A, int B>
  static void dpbusd() { emu::tdp(TdpOp::dpbusd, C, A, B); }
  template <int C, int A, int B>
  static void dpbuud() { emu::tdp(TdpOp::dpbuud, C, A, B); }
  template <int C, int A, int B>
  static void dpbf16ps() { emu::tdp(TdpOp::dpbf16ps, C, A, B); }
};
}  // namespace

}  // namespace kt::amx
