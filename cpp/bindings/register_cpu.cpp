#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "kt/cpu_features.h"

namespace py = pybind11;

namespace kt::py_bind {

void register_cpu(py::module_& m) {
  m.def("cpu_info", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["vendor"] = f.vendor;
    d["brand"] = f.brand;
    d["flags"] = f.flags();
    d["best_tier"] = tier_name(f.best);
    std::vector<std::string> tiers;
    for (int t = 0; t <= static_cast<int>(f.best); ++t) tiers.push_back(tier_name(static_cast<IsaTier>(t)));
    d["tiers"] = tiers;
    d["override"] = isa_override();
    d["active_tier"] = amx_emulated() ? kAmxEmuOverride : tier_name(active_tier());
    // test-only overrides this host can run (set_isa accepts them; never chosen automatically)
    std::vector<std::string> emulated;
    if (static_cast<int>(f.best) >= static_cast<int>(IsaTier::avx512_bf16)) emulated.push_back(kAmxEmuOverride);
    d["emulated_tiers"] = emulated;
    d["amx"] = f.amx_status;
    return d;
  });
  m.def("set_isa", &set_isa_override, py::arg("name"));
  m.def("all_tiers", [] {
    std::vector<std::string> out;
    for (int t = 0; t < kNumTiers; ++t) out.push_back(tier_name(static_cast<IsaTier>(t)));
    return out;
  });
}

}  // namespace kt::py_bind
