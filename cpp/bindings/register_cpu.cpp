#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "kt/cpu_features.h"
#include "kt/formats.h"
#include "kt/kernels.h"

namespace py = pybind11;

namespace kt::py_bind {

void register_cpu(py::module_& m) {
  m.def("cpu_info", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["vendor"] = f.vendor;
    d["brand"] = f.brand;
    d["family"] = f.family;
    d["model"] = f.model;
    d["flags"] = f.flags();
    d["features"] = feature_names(f.features);
    d["best_tier"] = tier_name(f.best);
    std::vector<std::string> tiers;
    for (int t = 0; t < kNumTiers; ++t)
      if (covers(f.features, tier_features(static_cast<IsaTier>(t)))) tiers.push_back(tier_name(static_cast<IsaTier>(t)));
    d["tiers"] = tiers;
    d["override"] = isa_override();
    const FeatureSet active = active_features();
    d["active_tier"] = isa_label(active);
    d["active_features"] = feature_names(active);
    // test-only overrides this host can run (set_isa accepts them; never chosen automatically)
    std::vector<std::string> emulated;
    if (covers(f.features, tier_features(IsaTier::avx512_bf16))) emulated.push_back(kAmxEmuOverride);
    d["emulated_tiers"] = emulated;
    d["amx"] = f.amx_status;
    d["sve_vector_bits"] = f.sve_vector_bits;
    d["stream_prefetch"] = stream_prefetch_name(stream_prefetch());
    return d;
  });
  m.def("set_isa", &set_isa_override, py::arg("name"));
  m.def("all_tiers", [] {
    std::vector<std::string> out;
    for (int t = 0; t < kNumTiers; ++t) out.push_back(tier_name(static_cast<IsaTier>(t)));
    return out;
  });
  m.def("tier_features", [](const std::string& name) {
    return feature_names(name == kAmxEmuOverride ? amx_emu_features() : tier_features(tier_from_name(name)));
  }, py::arg("name"), "The features a tier (or the test-only amx_emu set) names, whatever this CPU has.");
  m.def("dispatch_for_features", [](const std::string& format, const std::vector<std::string>& features) {
    const FeatureSet have = features_from_names(features);
    const FormatId id = format_by_name(format).id;
    const KernelRow& kernel = select_kernel(id, have);
    py::dict d;
    d["kernel"] = kernel.name;
    d["vector_kernel"] = kernel.min_m > 0 ? select_vector_kernel(id, have).name : kernel.name;
    d["quantizer"] = select_quantizer(id, have).name;
    d["act_codec"] = select_act_codec(have).name;
    d["label"] = isa_label(have);
    return d;
  }, py::arg("format"), py::arg("features"),
  "Test-only: what a layer's dispatch (the same functions) chooses for `format` on a CPU with exactly "
  "these features, whatever this CPU has. Nothing runs.");
}

}  // namespace kt::py_bind
