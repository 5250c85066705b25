// Engine and MoE layer. Tensors cross as raw addresses (data_ptr) with shapes and dtypes checked
// by the Python wrapper; the extension does not link against torch.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "kt/engine.h"
#include "kt/moe.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

template <class T>
const T* ptr(uintptr_t p) { return reinterpret_cast<const T*>(p); }

}  // namespace

void register_moe(py::module_& m) {
  py::class_<Job, std::shared_ptr<Job>>(m, "Job")
      .def("wait", &Job::wait, py::call_guard<py::gil_scoped_release>())
      .def("done", &Job::done);

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def_static("shared", &Engine::shared, py::arg("threads"), py::arg("subpools"))
      .def_property_readonly("threads", &Engine::threads)
      .def_property_readonly("subpools", &Engine::subpools)
      .def("threads_in", &Engine::threads_in)
      .def_property_readonly("pinned_cpus", &Engine::pinned_cpus);

  py::class_<MoeLayer, std::shared_ptr<MoeLayer>>(m, "MoeLayer")
      .def(py::init([](std::shared_ptr<Engine> engine, int E, int topk, int H, int I, const std::string& method,
                       std::vector<uint8_t> on_cpu, int chunk) {
             MoeConfig c;
             c.num_experts = E;
             c.topk = topk;
             c.hidden = H;
             c.intermediate = I;
             c.format = format_by_method(method).id;
             c.on_cpu = std::move(on_cpu);
             c.chunk_tokens = chunk;
             return std::make_shared<MoeLayer>(std::move(engine), std::move(c));
           }),
           py::arg("engine"), py::arg("num_experts"), py::arg("topk"), py::arg("hidden"), py::arg("intermediate"),
           py::arg("method"), py::arg("on_cpu"), py::arg("chunk_tokens"))
      .def("load_from_tensors",
           [](MoeLayer& l, uintptr_t gate, uintptr_t up, uintptr_t down, const std::string& dtype, uintptr_t map,
              int num_logical) {
             DType dt = dtype_from(dtype);
             py::gil_scoped_release nogil;
             l.load_from_tensors(ptr<void>(gate), ptr<void>(up), ptr<void>(down), dt, ptr<int64_t>(map), num_logical);
           })
      .def("load_quantized",
           [](MoeLayer& l, std::vector<uintptr_t> values, std::vector<uintptr_t> scale, std::vector<uintptr_t> gmin,
              uintptr_t map, int num_logical, bool drop_pages) {
             if (values.size() != 3 || scale.size() != 3 || gmin.size() != 3)
               throw std::invalid_argument("load_quantized takes 3 addresses (gate, up, down) per array");
             MoeLayer::QuantizedExperts proj[3];
             for (int j = 0; j < 3; ++j) proj[j] = {ptr<void>(values[j]), ptr<void>(scale[j]), ptr<void>(gmin[j])};
             py::gil_scoped_release nogil;
             l.load_quantized(proj, ptr<int64_t>(map), num_logical, drop_pages);
           },
           py::arg("values"), py::arg("scale"), py::arg("gmin"), py::arg("map"), py::arg("num_logical"),
           py::arg("drop_pages") = false, "Pre-quantized logical weights stacked over experts (layouts in kt/moe.h).")
      .def("submit",
           [](MoeLayer& l, uintptr_t x, const std::string& x_dtype, uintptr_t ids, bool ids64, uintptr_t w,
              const std::string& w_dtype, int M, uintptr_t out) {
             DType xd = dtype_from(x_dtype), wd = dtype_from(w_dtype);
             py::gil_scoped_release nogil;
             return l.submit(ptr<void>(x), xd, ptr<void>(ids), ids64, ptr<void>(w), wd, M,
                             reinterpret_cast<uint16_t*>(out));
           })
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
      .def_property_readonly("act_format", [](const MoeLayer& l) { return std::string(act_format_name(l.kernel().act)); })
      .def_property_readonly("weight_bytes", [](const MoeLayer& l) { return l.stats().weight_bytes; })
      .def_property_readonly("slice_bounds", &MoeLayer::slice_bounds);

  m.def("set_capture_batch_sizes", &set_capture_batch_sizes);
  m.def("capture_batch_sizes", &capture_batch_sizes);
  m.def("clear_buffer_cache", &clear_buffer_cache);
}

}  // namespace kt::py_bind
