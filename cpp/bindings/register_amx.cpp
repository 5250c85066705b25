// AMX tile backends, for tests: the software emulator (any CPU) instruction by instruction, and the
// shared tile GEMM through either backend (the hardware one only where AMX is permitted).
#include <pybind11/numpy.h>

#include <cstring>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "kernels/amx/tile_gemm.h"
#include "kernels/amx_emu/tile_emu.h"
#include "kernels/isa_tiers.h"
#include "kt/cpu_features.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

using amx::TdpOp;
using amx::TileConfig;

TileConfig config_from_bytes(const py::bytes& b) {
  std::string s = b;
  if (s.size() != sizeof(TileConfig))
    throw std::invalid_argument("tile config has " + std::to_string(s.size()) + " bytes, expected 64");
  TileConfig c;
  std::memcpy(&c, s.data(), sizeof c);
  return c;
}

int tile_arg(const py::tuple& op, size_t i, const std::string& name) {
  if (op.size() <= i) throw std::invalid_argument(name + ": expected " + std::to_string(i + 1) + "+ items, got " + std::to_string(op.size()));
  return op[i].cast<int>();
}

// Bytes the tile t reads or writes with `stride` under the current config: rows [start_row, rows).
size_t tile_span(int t, size_t stride) {
  if (t < 0 || t >= amx::kNumTiles) return 0;  // the instruction itself reports the bad index
  TileConfig c;
  amx::emu::sttilecfg(&c);
  if (c.palette_id == 0 || c.rows[t] == 0 || c.rows[t] <= c.start_row) return 0;
  if (stride > (size_t(1) << 32))
    throw std::invalid_argument("stride " + std::to_string(stride) + " is above the 2^32 bytes the tests need");
  return size_t(c.rows[t] - 1) * stride + c.colsb[t];
}

struct ReleaseOnExit {
  ReleaseOnExit() { amx::emu::tilerelease(); }
  ~ReleaseOnExit() { amx::emu::tilerelease(); }
};

py::list emu_run(const py::list& program) {
  static const std::pair<const char*, TdpOp> kTdp[] = {{"tdpbssd", TdpOp::dpbssd},
                                                       {"tdpbsud", TdpOp::dpbsud},
                                                       {"tdpbusd", TdpOp::dpbusd},
                                                       {"tdpbuud", TdpOp::dpbuud},
                                                       {"tdpbf16ps", TdpOp::dpbf16ps}};
  ReleaseOnExit fresh;  // every program starts and ends in the INIT state
  py::list out;
  for (size_t i = 0; i < program.size(); ++i) {
    py::tuple op = program[i].cast<py::tuple>();
    if (op.size() == 0) throw std::invalid_argument("program step " + std::to_string(i) + " is empty");
    const std::string name = op[0].cast<std::string>();
    if (name == "ldtilecfg") {
      if (op.size() != 2) throw std::invalid_argument("ldtilecfg takes (name, config_bytes)");
      amx::emu::ldtilecfg(config_from_bytes(op[1].cast<py::bytes>()));
    } else if (name == "tilerelease") {
      amx::emu::tilerelease();
    } else if (name == "tileloadd") {
      if (op.size() != 4) throw std::invalid_argument("tileloadd takes (name, tile, buffer_bytes, stride)");
      int t = tile_arg(op, 1, name);
      std::string buf = op[2].cast<py::bytes>();
      size_t stride = op[3].cast<size_t>();
      size_t need = tile_span(t, stride);
      if (buf.size() < need)
        throw std::invalid_argument("tileloadd tmm" + std::to_string(t) + ": buffer has " + std::to_string(buf.size()) +
                                    " bytes, the load reads " + std::to_string(need) + " (stride " +
                                    std::to_string(stride) + ")");
      amx::emu::tileloadd(t, buf.data(), stride);
    } else if (name == "tilestored") {
      if (op.size() != 3) throw std::invalid_argument("tilestored takes (name, tile, stride)");
      int t = tile_arg(op, 1, name);
      size_t stride = op[2].cast<size_t>();
      std::vector<uint8_t> mem(tile_span(t, stride), 0xAA);  // bytes not stored stay 0xAA
      amx::emu::tilestored(t, mem.data(), stride);
      out.append(py::bytes(reinterpret_cast<const char*>(mem.data()), mem.size()));
    } else if (name == "tilezero") {
      if (op.size() != 2) throw std::invalid_argument("tilezero takes (name, tile)");
      amx::emu::tilezero(tile_arg(op, 1, name));
    } else if (name == "read") {
      if (op.size() != 2) throw std::invalid_argument("read takes (name, tile)");
      uint8_t reg[amx::kTileBytes];
      amx::emu::read_register(tile_arg(op, 1, name), reg);
      out.append(py::bytes(reinterpret_cast<const char*>(reg), sizeof reg));
    } else if (name == "write") {
      if (op.size() != 3) throw std::invalid_argument("write takes (name, tile, 1024 bytes)");
      std::string raw = op[2].cast<py::bytes>();
      if (raw.size() != size_t(amx::kTileBytes))
        throw std::invalid_argument("write: " + std::to_string(raw.size()) + " bytes, expected 1024");
      amx::emu::write_register(tile_arg(op, 1, name), reinterpret_cast<const uint8_t*>(raw.data()));
    } else {
      const TdpOp* tdp = nullptr;
      for (const auto& [n, o] : kTdp)
        if (name == n) tdp = &o;
      if (!tdp)
        throw std::invalid_argument("unknown instruction '" + name + "'; expected ldtilecfg, tilerelease, tileloadd, "
                                    "tilestored, tilezero, read, write, tdpbssd, tdpbsud, tdpbusd, tdpbuud, tdpbf16ps");
      if (op.size() != 4) throw std::invalid_argument(name + " takes (name, c, a, b)");
      amx::emu::tdp(*tdp, tile_arg(op, 1, name), tile_arg(op, 2, name), tile_arg(op, 3, name));
    }
  }
  return out;
}

using GemmFn = void (*)(const int8_t*, size_t, const int8_t*, int32_t*, size_t, int, int);

py::array_t<int32_t> tile_gemm(GemmFn fn, const py::array& a, const py::array& bp) {
  if (!a.dtype().is(py::dtype::of<int8_t>()) || !bp.dtype().is(py::dtype::of<int8_t>()))
    throw std::invalid_argument("a and b must be int8 arrays, got " + std::string(py::str(a.dtype())) + " and " +
                                std::string(py::str(bp.dtype())));
  if (a.ndim() != 2 || bp.ndim() != 2)
    throw std::invalid_argument("a must be [M, K] and b [K/4, 64], got " + std::to_string(a.ndim()) + "-d and " +
                                std::to_string(bp.ndim()) + "-d arrays");
  const auto M = a.shape(0), K = a.shape(1);
  if (M < 1 || M > 16) throw std::invalid_argument("M = " + std::to_string(M) + " is not in [1, 16]");
  if (K < 4 || K % 4 != 0) throw std::invalid_argument("K = " + std::to_string(K) + " is not a positive multiple of 4");
  if (bp.shape(0) != K / 4 || bp.shape(1) != 64)
    throw std::invalid_argument("packed b has shape [" + std::to_string(bp.shape(0)) + ", " +
                                std::to_string(bp.shape(1)) + "], expected [K/4, 64] = [" + std::to_string(K / 4) +
                                ", 64]");
  if (a.strides(1) != 1 || a.strides(0) < K)
    throw std::invalid_argument("a rows must be contiguous with a row stride >= K bytes");
  if (!(bp.flags() & py::array::c_style)) throw std::invalid_argument("packed b must be C-contiguous");
  py::array_t<int32_t> c({M, py::ssize_t(16)});
  fn(static_cast<const int8_t*>(a.data()), size_t(a.strides(0)), static_cast<const int8_t*>(bp.data()),
     c.mutable_data(), /*ldc=*/16, int(M), int(K));
  return c;
}

}  // namespace

void register_amx(py::module_& m) {
  m.def("amx_emu_run", &emu_run, py::arg("program"),
        "Run a list of emulated AMX instructions on this thread's emulated tiles, from and back to the "
        "INIT state. Steps: ('ldtilecfg', cfg: 64 bytes), ('tilerelease',), ('tileloadd', t, buf: bytes, "
        "stride), ('tilestored', t, stride), ('tilezero', t), ('tdpbssd'|'tdpbsud'|'tdpbusd'|'tdpbuud'|"
        "'tdpbf16ps', c, a, b), ('read', t), and the test hook ('write', t, 1024 bytes) that fills a "
        "register behind the instructions' back. Returns, in order, the bytes of each tilestored (a buffer "
        "of (rows-1)*stride+colsb bytes that starts as 0xAA) and read (the 1 KiB register). A faulting "
        "instruction raises ValueError.");
  m.def(
      "amx_emu_tile_gemm_s8s8",
      [](const py::array& a, const py::array& b) { return tile_gemm(&amx::tile_gemm_s8s8_16x16__emu, a, b); },
      py::arg("a"), py::arg("b_packed"),
      "C[M, 16] int32 = a[M, K] int8 . B, B packed [K/4, 64] (VNNI: row r, dword n = B[4r..4r+3, n]); "
      "the shared tile GEMM on the emulator. M <= 16, K % 4 == 0.");
  m.def(
      "amx_tile_gemm_s8s8",
      [](const py::array& a, const py::array& b) {
        const CpuFeatures& f = cpu_features();
        if (!f.amx_permitted) throw std::runtime_error("AMX is not usable on this host: " + f.amx_status);
#if KT_X86_TIERS  // the hardware tile kernels (kernels/amx) are built for x86-64 only
        return tile_gemm(&amx::tile_gemm_s8s8_16x16__amx, a, b);
#else
        throw std::logic_error("AMX is permitted in a build without kernels/amx");
#endif
      },
      py::arg("a"), py::arg("b_packed"),
      "As amx_emu_tile_gemm_s8s8, on the AMX hardware. RuntimeError where AMX is not permitted.");
}

}  // namespace kt::py_bind
