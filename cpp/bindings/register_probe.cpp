// Machine-limit probes (cpp/src/probe): read bandwidth and instruction-family peaks, as dicts.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "probe/probe.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

py::dict family_dict(const probe::PeakResult& p) {
  py::dict f;
  f["available"] = p.available;
  f["instruction"] = p.instruction;
  f["unit"] = p.unit;
  f["isa"] = p.isa;
  f["ops_per_instruction"] = p.ops_per_instruction;
  f["accumulators"] = p.accumulators;
  if (!p.available) f["reason"] = p.reason;
  return f;
}

// The threads a measurement ran on; both result kinds carry the same four fields.
template <class Result>
py::dict threads_dict(const Result& r) {
  py::dict d;
  d["threads"] = r.threads;
  d["pinned"] = r.pinned;
  d["cpus"] = r.cpus;
  d["thread_ids"] = r.thread_ids;
  return d;
}

}  // namespace

void register_probe(py::module_& m) {
  m.def(
      "probe_bandwidth",
      [](int threads, size_t mib, int repeats, std::optional<bool> pin) {
        probe::BandwidthResult r;
        {
          py::gil_scoped_release nogil;
          r = probe::measure_bandwidth(threads, mib, repeats, pin);
        }
        py::dict d = threads_dict(r);
        d["bytes"] = r.bytes;
        d["loads"] = r.loads;
        d["huge_pages_advised"] = r.huge_pages_advised;
        d["gbps"] = r.gbps;
        d["best_gbps"] = r.best_gbps;
        d["median_gbps"] = r.median_gbps;
        return d;
      },
      py::arg("threads"), py::arg("mib") = 1024, py::arg("repeats") = 10, py::arg("pin") = py::none(),
      "Streaming read bandwidth: `threads` threads each read their slice of one `mib` MiB buffer "
      "(widest loads of the active tier), `repeats` times. GB/s per repeat, best and median. "
      "pin: True/False, or None for the engine's rule (one per allowed CPU when threads <= CPUs and "
      "KT_KERNEL_PIN_THREADS is not 0).");
  m.def(
      "probe_peaks",
      [](int threads, double seconds, std::optional<bool> pin, const std::vector<std::string>& families) {
        probe::PeaksResult r;
        {
          py::gil_scoped_release nogil;
          r = probe::measure_peaks(threads, seconds, pin, families);
        }
        py::dict fams;
        for (const auto& p : r.families) {
          py::dict f = family_dict(p);
          if (p.available) {
            f["rates"] = p.rates;
            f["best"] = p.best;
            f["median"] = p.median;
          } else {
            f["best"] = py::none();
            f["median"] = py::none();
          }
          fams[py::str(p.name)] = f;
        }
        py::dict d = threads_dict(r);
        d["tier"] = r.tier;
        d["seconds_per_family"] = r.seconds_per_family;
        d["families"] = fams;
        return d;
      },
      py::arg("threads"), py::arg("seconds") = 0.5, py::arg("pin") = py::none(),
      py::arg("families") = std::vector<std::string>{},
      "Peak rate of each instruction family on `threads` threads at once, `seconds` per family "
      "(trials of ~50 ms: best and median). Families above the active tier are not available. "
      "`families`: names to measure (default: all). pin: as probe_bandwidth.");
  m.def(
      "probe_families",
      [] {
        py::dict fams;
        for (const auto& p : probe::peak_families()) fams[py::str(p.name)] = family_dict(p);
        return fams;
      },
      "Every instruction family of probe_peaks, with `available` (and `reason`) at the active tier; "
      "nothing is measured.");
  m.def(
      "probe_clock_ghz",
      [](double seconds) {
        py::gil_scoped_release nogil;
        return probe::measure_clock_ghz(seconds);
      },
      py::arg("seconds") = 0.2,
      "Core clock estimate (GHz) from dependent integer adds on the calling thread: the fastest ~0.2 ms "
      "chunk of `seconds` of them.");
}

}  // namespace kt::py_bind
