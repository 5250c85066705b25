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

py::dtype numpy_dtype(const char* safetensors_dtype) { return py::dtype(element_type(safetensors_dtype).numpy); }

std::vector<py::ssize_t> array_shape(const FormatTraits& f, int i, int N, int K) {
  if (f.arrays[i].per == ArrayPer::row) return {N};
  return {N, py::ssize_t(f.array_row_elems(i, K))};
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
  for (int i = 0; i < f.num_arrays(); ++i) {
    py::array a(numpy_dtype(f.arrays[i].dtype), array_shape(f, i, N, K));
    if (size_t(a.nbytes()) != q.arrays[i].size())
      throw std::logic_error(std::string(f.name) + " array " + f.arrays[i].name + ": the quantizer wrote " +
                             std::to_string(q.arrays[i].size()) + " bytes, the record sizes it " +
                             std::to_string(a.nbytes()));
    if (!q.arrays[i].empty()) std::memcpy(a.mutable_data(), q.arrays[i].data(), q.arrays[i].size());
    d[f.arrays[i].name] = a;
  }
  return d;
}

// A dict of quantize()'s shape back into a QuantizedMatrix; each array must hold the record's
// number of elements.
QuantizedMatrix from_dict(const py::dict& d) {
  QuantizedMatrix q;
  const FormatTraits& f = format_by_name(d["format"].cast<std::string>());
  q.format = f.id;
  q.N = d["N"].cast<int>();
  q.K = d["K"].cast<int>();
  if (f.whole_blocks() && q.K % f.k_align)
    throw std::invalid_argument(std::string(f.name) + " rows are whole blocks of " + std::to_string(f.k_align) +
                                " weights: K=" + std::to_string(q.K) + " is not a multiple");
  for (int i = 0; i < f.num_arrays(); ++i) {
    const char* name = f.arrays[i].name;
    if (!d.contains(name)) throw std::invalid_argument(std::string(f.name) + " weights need the array '" + name + "'");
    // values keep their bits; scales convert, as a float64 array from numpy arithmetic would need
    py::array a = py::array::ensure(d[name], py::array::c_style);
    const py::dtype dt = numpy_dtype(f.arrays[i].dtype);
    if (a && !a.dtype().is(dt))
      a = i == 0 ? py::array(py::module_::import("numpy").attr("ascontiguousarray")(a).attr("view")(dt))
                 : py::array(a.attr("astype")(dt));
    const size_t want = size_t(q.N) * f.array_row_elems(i, q.K);
    if (!a || size_t(a.size()) != want)
      throw std::invalid_argument(std::string(f.name) + " array '" + name + "' must hold " + std::to_string(want) +
                                  " elements of " + std::string(py::str(dt)) + " for N=" + std::to_string(q.N) +
                                  ", K=" + std::to_string(q.K));
    const uint8_t* p = static_cast<const uint8_t*>(a.data());
    q.arrays[i].assign(p, p + a.nbytes());
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

// The whole of a quantized matrix in the layout kernel `row` reads.
struct Packed {
  std::vector<uint8_t> buf;
  PackedMatrix m;
  Packed(const QuantizedMatrix& q, const KernelRow& row) {
    const FormatTraits& f = format_traits(row.format);
    if (q.format != row.format)
      throw std::invalid_argument(std::string("weights are ") + format_traits(q.format).name + ", the kernel reads " + f.name);
    m.N = q.N, m.K = q.K, m.Kp = round_up(q.K, f.k_align), m.panels = (q.N + kPanelN - 1) / kPanelN;
    m.panel_bytes = f.panel_bytes(m.Kp);
    buf.resize(m.bytes());
    pack_for(row, q, 0, q.N, 0, q.K, buf.data());
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
    const int gs = q8_gsum_stride(Kp);
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
        Packed g(from_dict(gate), row), u(from_dict(up), row);
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
        Packed d(from_dict(down), row);
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
      d["quant_method"] = f->quant_method;
      d["group"] = f->group;
      d["k_align"] = f->k_align;
      d["block_bytes"] = f->block_bytes;
      d["panel_tail_bytes"] = f->panel_tail_bytes;
      d["bits_per_weight"] = f->bits_per_weight();
      d["gguf_type"] = f->gguf_type;
      py::list arrays;
      for (int i = 0; i < f->num_arrays(); ++i) {
        const FormatArray& a = f->arrays[i];
        static const char* per[] = {"value", "row", "group", "block"};
        arrays.append(py::dict(py::arg("name") = a.name, py::arg("part") = a.part, py::arg("dtype") = a.dtype,
                               py::arg("numpy") = element_type(a.dtype).numpy, py::arg("file_bits") = a.file_bits,
                               py::arg("per") = per[static_cast<int>(a.per)]));
      }
      d["arrays"] = arrays;
      py::list acts;
      for (int a = 0; a < kNumActFormats; ++a)
        if (f->acts & act_bit(ActFormat(a))) acts.append(act_format_name(ActFormat(a)));
      d["acts"] = acts;
      d["int_dot"] = f->int_dot;
      d["weight_rel_err"] = f->weight_rel_err;
      d["layer_rel_err"] = f->layer_rel_err;
      d["agreement"] = py::dict(py::arg("kl_mean") = f->agreement.kl_mean, py::arg("top1") = f->agreement.top1,
                                py::arg("tie_margin") = f->agreement.tie_margin);
      py::list kernels;
      for (const KernelRow& r : kernel_table())
        if (r.format == f->id) kernels.append(r.name);
      d["kernels"] = kernels;
      out.append(d);
    }
    return out;
  }, "One dict per weight format, from the format records (cpp/src/formats/format_registry.cpp): name, "
     "method, quant_method, group, k_align (k per block), block_bytes, panel_tail_bytes, bits_per_weight, gguf_type "
     "(the ggml type id of GGUF tensors held as they are, -1: none), arrays (name, part, "
     "dtype, numpy, file_bits, per), acts, int_dot, weight_rel_err, layer_rel_err, agreement (kl_mean, top1, "
     "tie_margin) and kernels (its kernel-table rows, best first).");
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
      d["layout"] = r.layout ? r.layout->name : "";
      out.append(d);
    }
    return out;
  };
  m.def("kernel_table", [rows] { return rows(kernel_table()); },
        "The kernel table, best-first: format, tier (the lowest that runs it), features (those it "
        "needs), act, name, min_m (tokens per expert from which the row runs; 0 for vector kernels), "
        "layout (the packed layout it reads when not its format's own, else '').");
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
    if (k0 % f.k_step()) throw std::invalid_argument("pack: k0 must be a multiple of " + std::to_string(f.k_step()));
    int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
    py::array_t<uint8_t> out(py::ssize_t(f.panel_bytes(round_up(k1 - k0, f.k_align)) * panels));
    f.pack(q, n0, n1, k0, k1, out.mutable_data());
    return out;
  }, py::arg("quantized"), py::arg("n0"), py::arg("n1"), py::arg("k0"), py::arg("k1"));
  m.def("quantize_activation", [](const std::string& act, py::array_t<float, py::array::c_style | py::array::forcecast> x, int Kp) {
    int ai = -1;
    for (int i = 0; i < kNumActFormats; ++i) if (act == act_format_name(ActFormat(i))) ai = i;
    if (ai < 0) throw std::invalid_argument("unknown activation format " + act);
    const int M = int(x.shape(0)), K = int(x.shape(1));
    ActFormat af = static_cast<ActFormat>(ai);
    size_t rb = act_row_bytes(af, Kp);
    py::array_t<uint8_t> data({py::ssize_t(M), py::ssize_t(rb)});
    py::array_t<float> scale(M);
    py::array_t<int32_t> gsum({M, q8_gsum_stride(Kp)});
    std::memset(gsum.mutable_data(), 0, size_t(gsum.size()) * 4);
    const ActCodecRow& codec = select_act_codec(active_features());
    for (int t = 0; t < M; ++t)
      if (!codec.quantize(af, x.data() + size_t(t) * K, K, Kp, data.mutable_data() + t * rb, scale.mutable_data() + t,
                          gsum.mutable_data() + size_t(t) * q8_gsum_stride(Kp)))
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
