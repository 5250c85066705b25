// Formats, the kernel table and the reference quantizers/packers, exposed for tests and tools.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bindings/bindings.h"
#include "kt/formats.h"
#include "kt/kernels.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

template <class T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::dict quantize(const std::string& format, py::array_t<float, py::array::c_style | py::array::forcecast> w) {
  if (w.ndim() != 2) throw std::invalid_argument("quantize expects a 2-D [N, K] weight array");
  const FormatTraits& f = format_by_name(format);
  const int N = int(w.shape(0)), K = int(w.shape(1));
  QuantizedMatrix q;
  {
    py::gil_scoped_release nogil;
    f.quantize_ref(w.data(), N, K, &q);
  }
  py::dict d;
  d["format"] = format;
  d["N"] = N;
  d["K"] = K;
  const int groups = f.group ? (K + f.group - 1) / f.group : 0;
  switch (q.format) {
    case FormatId::bf16: {
      std::vector<uint16_t> v(size_t(N) * K);
      std::memcpy(v.data(), q.values.data(), v.size() * 2);
      d["values"] = to_array(v, {N, K});
      break;
    }
    case FormatId::int8_pc: {
      std::vector<int8_t> v(q.values.begin(), q.values.end());
      d["values"] = to_array(v, {N, K});
      d["scale"] = to_array(q.scale, {N});
      break;
    }
    case FormatId::int4_g32:
      d["values"] = to_array(q.values, {N, K});
      d["group_scale"] = to_array(q.group_scale, {N, groups});
      d["group_min"] = to_array(q.group_min, {N, groups});
      break;
  }
  return d;
}

QuantizedMatrix from_dict(const py::dict& d) {
  QuantizedMatrix q;
  const FormatTraits& f = format_by_name(d["format"].cast<std::string>());
  q.format = f.id;
  q.N = d["N"].cast<int>();
  q.K = d["K"].cast<int>();
  auto bytes_of = [](const py::handle& h) {
    py::array a = py::array::ensure(h, py::array::c_style);
    const uint8_t* p = static_cast<const uint8_t*>(a.data());
    return std::vector<uint8_t>(p, p + a.nbytes());
  };
  q.values = bytes_of(d["values"]);
  if (d.contains("scale")) {
    auto s = d["scale"].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
    q.scale.assign(s.data(), s.data() + s.size());
  }
  if (d.contains("group_scale")) {
    auto gs = d["group_scale"].cast<py::array_t<uint16_t, py::array::c_style | py::array::forcecast>>();
    auto gm = d["group_min"].cast<py::array_t<uint16_t, py::array::c_style | py::array::forcecast>>();
    q.group_scale.assign(gs.data(), gs.data() + gs.size());
    q.group_min.assign(gm.data(), gm.data() + gm.size());
  }
  return q;
}

}  // namespace

void register_formats(py::module_& m) {
  m.def("formats", [] {
    py::list out;
    for (const FormatTraits* f : all_formats()) {
      py::dict d;
      d["name"] = f->name;
      d["method"] = f->method;
      d["group"] = f->group;
      d["k_align"] = f->k_align;
      d["bits_per_weight"] = f->bits_per_weight;
      out.append(d);
    }
    return out;
  });
  auto rows = [](const std::vector<KernelRow>& table) {
    py::list out;
    for (const KernelRow& r : table) {
      py::dict d;
      d["format"] = format_traits(r.format).name;
      d["tier"] = tier_name(r.tier);
      d["act"] = act_format_name(r.act);
      d["name"] = r.name;
      d["min_m"] = r.min_m;
      out.append(d);
    }
    return out;
  };
  m.def("kernel_table", [rows] { return rows(kernel_table()); },
        "The kernel table, best-first: format, tier, act, name, min_m (tokens per expert from which "
        "the row runs; 0 for vector kernels).");
  m.def("emulated_kernel_table", [rows] { return rows(emulated_kernel_table()); },
        "Test-only: the AMX tile kernels on the tile emulator, chosen under set_isa('amx_emu').");
  m.def("panel_n", [] { return kPanelN; });
  m.def("quantize", &quantize, py::arg("format"), py::arg("w"),
        "Reference quantizer: fp32 [N, K] -> dict of logical arrays (values, scales).");
  m.def("dequantize", [](const py::dict& d) {
    QuantizedMatrix q = from_dict(d);
    py::array_t<float> out({q.N, q.K});
    format_traits(q.format).dequantize_ref(q, out.mutable_data());
    return out;
  });
  m.def("pack", [](const py::dict& d, int n0, int n1, int k0, int k1) {
    QuantizedMatrix q = from_dict(d);
    const FormatTraits& f = format_traits(q.format);
    if (n0 < 0 || n1 > q.N || n0 > n1 || k0 < 0 || k1 > q.K || k0 > k1)
      throw std::invalid_argument("pack range out of bounds");
    int align = f.group ? f.group : f.k_align;
    if (k0 % align) throw std::invalid_argument("pack: k0 must be a multiple of " + std::to_string(align));
    int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
    py::array_t<uint8_t> out(py::ssize_t(f.panel_bytes(round_up(k1 - k0, f.k_align)) * panels));
    f.pack(q, n0, n1, k0, k1, out.mutable_data());
    return out;
  }, py::arg("quantized"), py::arg("n0"), py::arg("n1"), py::arg("k0"), py::arg("k1"));
  m.def("quantize_activation", [](const std::string& act, py::array_t<float, py::array::c_style | py::array::forcecast> x, int Kp) {
    static const char* names[] = {"f32", "bf16", "q8s", "q8u"};
    int ai = -1;
    for (int i = 0; i < 4; ++i) if (act == names[i]) ai = i;
    if (ai < 0) throw std::invalid_argument("unknown activation format " + act);
    const int M = int(x.shape(0)), K = int(x.shape(1));
    ActFormat af = static_cast<ActFormat>(ai);
    size_t rb = act_row_bytes(af, Kp);
    py::array_t<uint8_t> data({py::ssize_t(M), py::ssize_t(rb)});
    py::array_t<float> scale(M);
    py::array_t<int32_t> gsum({M, Kp / 32 + 1});
    for (int t = 0; t < M; ++t)
      if (!quantize_act_row(af, x.data() + size_t(t) * K, K, Kp, data.mutable_data() + t * rb, scale.mutable_data() + t,
                            gsum.mutable_data() + size_t(t) * (Kp / 32 + 1)))
        throw std::invalid_argument("row " + std::to_string(t) + " holds NaN or Inf");
    return py::make_tuple(data, scale, gsum);
  });
}

}  // namespace kt::py_bind
