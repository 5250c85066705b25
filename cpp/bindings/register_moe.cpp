// Engine and MoE layer. Tensors cross as raw addresses (data_ptr) with shapes and dtypes checked
// by the Python wrapper; the extension does not link against torch.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <new>

#include "bindings/bindings.h"
#include "kt/engine.h"
#include "kt/moe.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

template <class T>
const T* ptr(uintptr_t p) { return reinterpret_cast<const T*>(p); }

// An uninitialized bf16 output of n values, 64-byte aligned like a torch allocation.
std::shared_ptr<uint16_t> alloc_output(size_t n) {
  const size_t bytes = (n * sizeof(uint16_t) + 63) / 64 * 64 + 64;  // never 0 bytes
  auto* p = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<uint16_t>(p, [](uint16_t* q) { std::free(q); });
}

}  // namespace

void register_moe(py::module_& m) {
  py::class_<Job, std::shared_ptr<Job>>(m, "Job")
      .def("wait", &Job::wait, py::call_guard<py::gil_scoped_release>())
      .def("done", &Job::done);

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def_static(
          "shared",
          [](int threads, int subpools, const std::vector<std::pair<std::vector<int>, int>>& placement) {
            std::vector<PoolPlacement> pools;
            for (const auto& [cpus, node] : placement) pools.push_back({cpus, node});
            py::gil_scoped_release nogil;
            return Engine::shared(threads, subpools, pools);
          },
          py::arg("threads"), py::arg("subpools"), py::arg("placement") = std::vector<std::pair<std::vector<int>, int>>{},
          "placement: [] or one (cpus, memory node or -1) per sub-pool (kt/numa.h PoolPlacement).")
      .def_property_readonly("threads", &Engine::threads)
      .def_property_readonly("subpools", &Engine::subpools)
      .def("threads_in", &Engine::threads_in)
      .def_property_readonly("pinned_cpus", &Engine::pinned_cpus)
      .def_property_readonly("placement", [](const Engine& e) {
        std::vector<std::pair<std::vector<int>, int>> out;
        for (const PoolPlacement& p : e.placement()) out.emplace_back(p.cpus, p.mem_node);
        return out;
      });

  py::class_<MoeLayer, std::shared_ptr<MoeLayer>>(m, "MoeLayer")
      .def(py::init([](std::shared_ptr<Engine> engine, int E, int topk, int H, int I, const std::string& method,
                       std::vector<uint8_t> on_cpu, int chunk, int layer_idx, int deferred,
                       const std::vector<std::string>& formats, float swiglu_limit, float swiglu_alpha) {
             MoeConfig c;
             c.num_experts = E;
             c.topk = topk;
             c.hidden = H;
             c.intermediate = I;
             if (formats.empty()) {
               c.format = c.down_format = format_by_method(method).id;
             } else {
               if (formats.size() != 2)
                 throw std::invalid_argument("formats names the gate/up and the down format: 2 names, not " +
                                             std::to_string(formats.size()));
               c.format = format_by_name(formats[0]).id;
               c.down_format = format_by_name(formats[1]).id;
               // LLAMAFILE takes every format a GGUF tensor may hold (bf16 too); another method its own,
               // or one that no method names (int4_g32_zp, which the int4 release readers choose)
               const bool gguf = method == kGgufMethod;
               for (const FormatTraits* f : {&format_traits(c.format), &format_traits(c.down_format)})
                 if (gguf ? f->gguf_type < 0 : *f->method && method != f->method)
                   throw std::invalid_argument(std::string("format ") + f->name + " belongs to method " + f->method +
                                               ", not " + method);
             }
             c.on_cpu = std::move(on_cpu);
             c.chunk_tokens = chunk;
             c.layer_idx = layer_idx;
             c.deferred_experts = deferred;
             if (!(std::isfinite(swiglu_limit) && swiglu_limit >= 0.f))
               throw std::invalid_argument("swiglu_limit must be finite and >= 0 (0: no clamp), got " +
                                           std::to_string(swiglu_limit));
             if (!std::isfinite(swiglu_alpha))
               throw std::invalid_argument("swiglu_alpha must be finite (0: SiLU), got " + std::to_string(swiglu_alpha));
             c.swiglu_limit = swiglu_limit;
             c.swiglu_alpha = swiglu_alpha;
             return std::make_shared<MoeLayer>(std::move(engine), std::move(c));
           }),
           py::arg("engine"), py::arg("num_experts"), py::arg("topk"), py::arg("hidden"), py::arg("intermediate"),
           py::arg("method"), py::arg("on_cpu"), py::arg("chunk_tokens"), py::arg("layer_idx") = -1,
           py::arg("deferred_experts") = 0, py::arg("formats") = std::vector<std::string>{},
           py::arg("swiglu_limit") = 0.f, py::arg("swiglu_alpha") = 0.f,
           "formats: [gate/up format, down format] of the method (LLAMAFILE: the GGUF file's types); "
           "empty: the method's one format for all three. swiglu_limit, swiglu_alpha: the gated "
           "activation (kt/kernels.h GluParams; 0, 0: silu(g) * u).")
      .def("weight_page_nodes", &MoeLayer::weight_page_nodes, py::arg("pool"),
           "The memory node of each page of sub-pool pool's packed weights (move_pages; negative: not present).")
      .def("load_from_tensors",
           [](MoeLayer& l, uintptr_t gate, uintptr_t up, uintptr_t down, const std::string& dtype, uintptr_t map,
              int num_logical, uintptr_t gate_bias, uintptr_t up_bias, uintptr_t down_bias) {
             DType dt = dtype_from(dtype);
             const ExpertBiases biases{ptr<float>(gate_bias), ptr<float>(up_bias), ptr<float>(down_bias)};
             py::gil_scoped_release nogil;
             l.load_from_tensors(ptr<void>(gate), ptr<void>(up), ptr<void>(down), dt, ptr<int64_t>(map), num_logical,
                                 biases);
           },
           py::arg("gate"), py::arg("up"), py::arg("down"), py::arg("dtype"), py::arg("map"), py::arg("num_logical"),
           py::arg("gate_bias") = 0, py::arg("up_bias") = 0, py::arg("down_bias") = 0,
           "Float weights, quantized here. *_bias: addresses of fp32 [E, I] / [E, I] / [E, H] biases, 0 for none.")
      .def("load_quantized",
           [](MoeLayer& l, std::vector<std::vector<py::object>> arrays, uintptr_t map, int num_logical,
              py::object drop_pages, uintptr_t gate_bias, uintptr_t up_bias, uintptr_t down_bias) {
             if (arrays.size() != 3)
               throw std::invalid_argument("load_quantized takes the arrays of 3 projections (gate, up, down), not " +
                                           std::to_string(arrays.size()));
             MoeLayer::QuantizedExperts proj[3];
             for (int j = 0; j < 3; ++j) {
               const FormatTraits& f = format_traits(j == 2 ? l.config().down_format : l.config().format);
               if (int(arrays[j].size()) != f.num_arrays())
                 throw std::invalid_argument(std::string(f.name) + " weights have " + std::to_string(f.num_arrays()) +
                                             " arrays per projection; projection " + std::to_string(j) + " has " +
                                             std::to_string(arrays[j].size()));
               for (int i = 0; i < f.num_arrays(); ++i) {
                 if (py::isinstance<py::int_>(arrays[j][i])) {
                   proj[j].arrays[i] = ptr<void>(arrays[j][i].cast<uintptr_t>());
                 } else {
                   for (uintptr_t p : arrays[j][i].cast<std::vector<uintptr_t>>()) proj[j].experts[i].push_back(ptr<void>(p));
                 }
                 proj[j].mapped[i] = py::isinstance<py::bool_>(drop_pages)
                                         ? drop_pages.cast<bool>()
                                         : drop_pages.cast<std::vector<std::vector<bool>>>().at(j).at(i);
               }
             }
             const ExpertBiases biases{ptr<float>(gate_bias), ptr<float>(up_bias), ptr<float>(down_bias)};
             py::gil_scoped_release nogil;
             l.load_quantized(proj, ptr<int64_t>(map), num_logical, biases);
           },
           py::arg("arrays"), py::arg("map"), py::arg("num_logical"), py::arg("drop_pages") = false,
           py::arg("gate_bias") = 0, py::arg("up_bias") = 0, py::arg("down_bias") = 0,
           "Pre-quantized logical weights: arrays[proj][i] is the format's array i (formats()[..]['arrays']) "
           "of projection proj, the address of all experts stacked, or a list of one address per expert "
           "(0: not given). drop_pages: True, False, or drop_pages[proj][i] per array: that array is a "
           "read-only file mapping whose pages are released once packed (layouts in kt/moe.h).")
      .def("submit",
           [](MoeLayer& l, uintptr_t x, const std::string& x_dtype, uintptr_t ids, bool ids64, uintptr_t w,
              const std::string& w_dtype, int M) {
             DType xd = dtype_from(x_dtype), wd = dtype_from(w_dtype);
             const int H = l.config().hidden;
             std::shared_ptr<uint16_t> out = alloc_output(size_t(std::max(M, 0)) * H);
             std::shared_ptr<Job> job;
             {
               py::gil_scoped_release nogil;
               job = l.submit({.x = ptr<void>(x), .x_dtype = xd, .ids = ptr<void>(ids), .ids_int64 = ids64,
                               .weights = ptr<void>(w), .w_dtype = wd, .M = M},
                              out);
             }
             // The array and the job share the buffer: whichever lets go of it last frees it.
             py::capsule owner(new std::shared_ptr<uint16_t>(out),
                               [](void* p) { delete static_cast<std::shared_ptr<uint16_t>*>(p); });
             py::array_t<uint16_t> array(std::vector<py::ssize_t>{M, H}, out.get(), owner);
             return py::make_tuple(job, array);
           },
           py::arg("x"), py::arg("x_dtype"), py::arg("ids"), py::arg("ids_int64"), py::arg("weights"),
           py::arg("w_dtype"), py::arg("tokens"),
           "Queues a forward; returns (job, output): the output, uint16 bf16 bits [tokens, hidden], is "
           "written by the job and valid once job.wait() returns.")
      .def("submit_write_bf16",
           [](MoeLayer& l, int slot, int tp, const std::vector<uintptr_t>& w13, const std::vector<uintptr_t>& w2) {
             auto as_ptrs = [](const std::vector<uintptr_t>& v) {
               std::vector<uint16_t*> out;
               for (uintptr_t p : v) out.push_back(reinterpret_cast<uint16_t*>(p));
               return out;
             };
             return l.submit_write_bf16(slot, tp, as_ptrs(w13), as_ptrs(w2));
           },
           py::arg("slot"), py::arg("tp"), py::arg("w13"), py::arg("w2"),
           "Queues the write of a CPU slot's weights as bf16 into per-rank buffers (layouts in kt/moe.h); "
           "returns the job.")
      .def("submit_barrier", &MoeLayer::submit_barrier,
           "An empty job queued on the layer's engine: done once every job queued before it ran.")
      .def_property_readonly("loaded", &MoeLayer::loaded)
      .def_property_readonly("kernel_name", [](const MoeLayer& l) { return std::string(l.kernel().name); })
      .def_property_readonly("vector_kernel_name", [](const MoeLayer& l) { return std::string(l.vector_kernel().name); })
      .def_property_readonly("tile_min_m", [](const MoeLayer& l) { return l.kernel().min_m; })
      .def_property_readonly("last_kernels",
                             [](const MoeLayer& l) {
                               py::dict d;
                               const auto& k = l.last_kernels();
                               for (size_t slot = 0; slot < k.size(); ++slot)
                                 if (k[slot]) d[py::int_(slot)] = std::string(k[slot]->name);
                               return d;
                             },
                             "slot -> name of the kernel that computed the slot's tokens in the latest forward")
      .def_property_readonly("tier", &MoeLayer::tier_label)
      .def_property_readonly("format", [](const MoeLayer& l) { return std::string(format_traits(l.config().format).name); })
      .def_property_readonly("down_format", [](const MoeLayer& l) { return std::string(format_traits(l.config().down_format).name); })
      .def_property_readonly("down_kernel_name", [](const MoeLayer& l) { return std::string(l.down_kernel().name); })
      .def_property_readonly("act_format", [](const MoeLayer& l) { return std::string(act_format_name(l.kernel().act)); })
      .def_property_readonly("weight_bytes", [](const MoeLayer& l) { return l.stats().weight_bytes; })
      .def_property_readonly("slice_bounds", &MoeLayer::slice_bounds);

  m.def("set_capture_batch_sizes", &set_capture_batch_sizes);
  m.def("capture_batch_sizes", &capture_batch_sizes);
  m.def("clear_buffer_cache", &clear_buffer_cache);
}

}  // namespace kt::py_bind
