// Formats, the kernel table and the reference quantizers/packers, exposed for tests and tools.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bindings/bindings.h"
#include "kt/cpu_features.h"
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
  const QuantizerRow& quantizer = select_quantizer(f.id, active_features());
  const int N = int(w.shape(0)), K = int(w.shape(1));
  QuantizedMatrix q;
  {
    py::gil_scoped_release nogil;
    quantizer.quantize(w.data(), N, K, &q);
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

// A row of the kernel table or of the emulated table, by name, if this CPU can run it (the
// emulated rows' amx_tile_emu and AMX dot products are software: only their vector needs count).
const KernelRow& runnable_row(const std::string& name) {
  const CpuFeatures& f = cpu_features();
  const FeatureSet emulated = feature::amx_tile_emu | feature::amx_int8 | feature::amx_bf16;
  for (const std::vector<KernelRow>* table : {&kernel_table(), &emulated_kernel_table()})
    for (const KernelRow& r : *table) {
      if (name != r.name) continue;
      const FeatureSet needs = r.needs & feature::amx_tile_emu ? r.needs & ~emulated : r.needs;
      if (!covers(f.features, needs)) {
        std::string lacks;
        for (const std::string& n : feature_names(needs & ~f.features)) lacks += " " + n;
        throw std::runtime_error(name + " needs the " + tier_name(row_tier(needs)) + " tier; this CPU supports at most '" +
                                 tier_name(f.best) + "' (it lacks" + lacks + ")");
      }
      return r;
    }
  throw std::invalid_argument("no kernel named " + name + " in kernel_table() or emulated_kernel_table()");
}

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// The whole of a quantized matrix in the kernel layout.
struct Packed {
  std::vector<uint8_t> buf;
  PackedMatrix m;
  Packed(const QuantizedMatrix& q, FormatId format) {
    const FormatTraits& f = format_traits(format);
    if (q.format != format)
      throw std::invalid_argument(std::string("weights are ") + format_traits(q.format).name + ", the kernel reads " + f.name);
    m.N = q.N, m.K = q.K, m.Kp = round_up(q.K, f.k_align), m.panels = (q.N + kPanelN - 1) / kPanelN;
    m.panel_bytes = f.panel_bytes(m.Kp);
    buf.resize(m.bytes());
    f.pack(q, 0, q.N, 0, q.K, buf.data());
    m.data = buf.data();
  }
};

// Activation rows of x [T, K] in the kernel's format, padded to Kp.
struct Acts {
  std::vector<uint8_t> data;
  std::vector<float> scale;
  std::vector<int32_t> gsum;
  ActView view;
  Acts(ActFormat af, const F32Array& x, int Kp) {
    if (x.ndim() != 2) throw std::invalid_argument("activations must be a 2-D [rows, K] array");
    const int T = int(x.shape(0)), K = int(x.shape(1));
    const size_t rb = act_row_bytes(af, Kp);
    const int gs = Kp / 32 + 1;
    data.resize(rb * T), scale.resize(T), gsum.resize(size_t(gs) * T);
    for (int t = 0; t < T; ++t)
      if (!quantize_act_row(af, x.data() + size_t(t) * K, K, Kp, data.data() + rb * t, &scale[t], &gsum[size_t(gs) * t]))
        throw std::invalid_argument("activation row " + std::to_string(t) + " holds NaN or Inf");
    view = ActView{af, data.data(), rb, scale.data(), gsum.data(), gs, Kp};
  }
};

}  // namespace

void register_formats(py::module_& m) {
  m.def(
      "kernel_gateup",
      [](const std::string& name, const py::dict& gate, const py::dict& up, const F32Array& x, const I32Array& rows) {
        const KernelRow& row = runnable_row(name);
        Packed g(from_dict(gate), row.format), u(from_dict(up), row.format);
        if (g.m.N != u.m.N || g.m.K != u.m.K || x.ndim() != 2 || x.shape(1) != g.m.K)
          throw std::invalid_argument("gate and up must both be [N, K] and x [T, K]");
        Acts a(row.act, x, g.m.Kp);
        const int mrows = int(rows.size());
        for (int i = 0; i < mrows; ++i)
          if (rows.data()[i] < 0 || rows.data()[i] >= x.shape(0))
            throw std::invalid_argument("rows[" + std::to_string(i) + "] = " + std::to_string(rows.data()[i]) + " is not a row of x");
        py::array_t<float> h({py::ssize_t(mrows), py::ssize_t(g.m.panels * kPanelN)});
        row.gateup(GateUpArgs{&g.m, &u.m, a.view, rows.data(), mrows, 0, g.m.panels, h.mutable_data(),
                              size_t(g.m.panels * kPanelN)});
        return h;
      },
      py::arg("name"), py::arg("gate"), py::arg("up"), py::arg("x"), py::arg("rows"),
      "Test hook: the gate/up stage of kernel `name` (either table) on quantized gate, up [N, K] and "
      "rows `rows` of x [T, K]: h [len(rows), N padded to 16] fp32 = silu(gate x) * (up x).");
  m.def(
      "kernel_down",
      [](const std::string& name, const py::dict& down, const F32Array& h, const I32Array& tok, const F32Array& weight,
         const F32Array& out_in) {
        const KernelRow& row = runnable_row(name);
        Packed d(from_dict(down), row.format);
        if (h.ndim() != 2 || h.shape(1) != d.m.K || tok.size() != h.shape(0) || weight.size() != h.shape(0) ||
            out_in.ndim() != 2 || out_in.shape(1) != d.m.panels * kPanelN)
          throw std::invalid_argument("expected h [m, K], tok [m], weight [m], out [T, N padded to 16]");
        for (py::ssize_t i = 0; i < tok.size(); ++i)
          if (tok.data()[i] < 0 || tok.data()[i] >= out_in.shape(0))
            throw std::invalid_argument("tok[" + std::to_string(i) + "] is not a row of out");
        Acts a(row.act, h, d.m.Kp);
        py::array_t<float> out({out_in.shape(0), out_in.shape(1)});
        std::memcpy(out.mutable_data(), out_in.data(), size_t(out_in.size()) * 4);
        row.down(DownArgs{&d.m, a.view, int(h.shape(0)), tok.data(), weight.data(), 0, d.m.panels, out.mutable_data(),
                          size_t(out_in.shape(1))});
        return out;
      },
      py::arg("name"), py::arg("down"), py::arg("h"), py::arg("tok"), py::arg("weight"), py::arg("out"),
      "Test hook: the down stage of kernel `name` on quantized down [N, K]: a copy of out [T, N padded "
      "to 16] fp32 with out[tok[i]] += weight[i] * (down h[i]).");
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
      d["tier"] = tier_name(row_tier(r.needs));
      d["features"] = feature_names(r.needs);
      d["act"] = act_format_name(r.act);
      d["name"] = r.name;
      d["min_m"] = r.min_m;
      out.append(d);
    }
    return out;
  };
  m.def("kernel_table", [rows] { return rows(kernel_table()); },
        "The kernel table, best-first: format, tier (the lowest that runs it), features (those it "
        "needs), act, name, min_m (tokens per expert from which the row runs; 0 for vector kernels).");
  m.def("emulated_kernel_table", [rows] { return rows(emulated_kernel_table()); },
        "Test-only: the AMX tile kernels on the tile emulator, chosen under set_isa('amx_emu').");
  m.def("quantizer_table", [] {
    py::list out;
    for (const QuantizerRow& r : quantizer_table()) {
      py::dict d;
      d["format"] = format_traits(r.format).name;
      d["tier"] = tier_name(row_tier(r.needs));
      d["features"] = feature_names(r.needs);
      d["name"] = r.name;
      out.append(d);
    }
    return out;
  });
  m.def("quantizer", [](const std::string& format) {
    return select_quantizer(format_by_name(format).id, active_features()).name;
  }, py::arg("format"), "Name of the quantizer `quantize` runs for this format on the active tier.");
  m.def("panel_n", [] { return kPanelN; });
  m.def("quantize", &quantize, py::arg("format"), py::arg("w"),
        "Quantizer of the active ISA tier (bit-identical to the format's reference quantizer): "
        "fp32 [N, K] -> dict of logical arrays (values, scales).");
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
    std::memset(gsum.mutable_data(), 0, size_t(gsum.size()) * 4);
    const ActCodecRow& codec = select_act_codec(active_features());
    for (int t = 0; t < M; ++t)
      if (!codec.quantize(af, x.data() + size_t(t) * K, K, Kp, data.mutable_data() + t * rb, scale.mutable_data() + t,
                          gsum.mutable_data() + size_t(t) * (Kp / 32 + 1)))
        throw std::invalid_argument("row " + std::to_string(t) + " holds NaN or Inf");
    return py::make_tuple(data, scale, gsum);
  }, py::arg("act"), py::arg("x"), py::arg("Kp"),
     "The active tier's activation codec: fp32 x [M, K] -> (rows in format `act` padded to Kp, "
     "per-row scale, per-row sums of q over each group of 32).");
  m.def("act_codec", [] { return select_act_codec(active_features()).name; },
        "Name of the activation codec of the active tier.");
  m.def("widen_activation", [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> x, const std::string& dtype) {
    if (dtype != "bf16" && dtype != "f16") throw std::invalid_argument("dtype must be 'bf16' or 'f16', not '" + dtype + "'");
    py::array_t<float> out(x.size());
    select_act_codec(active_features()).widen(dtype == "bf16" ? DType::bf16 : DType::f16, x.data(), int(x.size()), out.mutable_data());
    return out;
  }, py::arg("x"), py::arg("dtype"), "The active tier's codec: bf16 or f16 bits (1-D uint16) -> fp32.");
  m.def("round_activation_bf16", [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    py::array_t<uint16_t> out(x.size());
    select_act_codec(active_features()).round_bf16(x.data(), int(x.size()), out.mutable_data());
    return out;
  }, py::arg("x"), "The active tier's codec: fp32 (1-D) -> bf16 bits, round to nearest even.");
}

}  // namespace kt::py_bind
