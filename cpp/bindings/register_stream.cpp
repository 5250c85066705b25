// The stream path of a layer (moe/stream_submit.h) and the CUDA runtime lookup. Streams and device
// memory cross as integers (cudaStream_t handles, data_ptr addresses).
#include <pybind11/stl.h>

#include <optional>

#include "bindings/bindings.h"
#include "moe/stream_submit.h"
#include "runtime/cuda_runtime.h"

namespace py = pybind11;

namespace kt::py_bind {
namespace {

cuda::Stream stream_of(uintptr_t handle) { return reinterpret_cast<cuda::Stream>(handle); }

template <class T>
T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace

void register_stream(py::module_& m) {
  py::class_<StreamLayer, std::shared_ptr<StreamLayer>>(m, "StreamLayer")
      .def(py::init(&StreamLayer::create), py::arg("layer"))
      .def("submit",
           [](StreamLayer& s, uintptr_t stream, uintptr_t x, const std::string& x_dtype, uintptr_t ids, bool ids64,
              uintptr_t w, const std::string& w_dtype, int M) {
             DType xd = dtype_from(x_dtype), wd = dtype_from(w_dtype);
             py::gil_scoped_release nogil;
             s.submit(stream_of(stream), ptr<const void>(x), xd, ptr<const void>(ids), ids64, ptr<const void>(w), wd, M);
           },
           py::arg("stream"), py::arg("x"), py::arg("x_dtype"), py::arg("ids"), py::arg("ids_int64"), py::arg("weights"),
           py::arg("w_dtype"), py::arg("M"))
      .def("sync",
           [](StreamLayer& s, uintptr_t stream, uintptr_t out) {
             py::gil_scoped_release nogil;
             s.sync(stream_of(stream), ptr<void>(out));
           },
           py::arg("stream"), py::arg("out"))
      .def("rethrow_error", &StreamLayer::rethrow_error);

  m.def("set_stream_capture_batch_sizes", &set_stream_capture_batch_sizes, py::call_guard<py::gil_scoped_release>());
  m.def("is_device_pointer", [](uintptr_t p) { return cuda::is_device_pointer(ptr<const void>(p)); },
        "True when a CUDA runtime is loaded and reports the address as device memory.");
  m.def("cuda_runtime_path",
        []() -> std::optional<std::string> {
          const cuda::Api* api = cuda::find_runtime();
          return api ? std::optional<std::string>(api->path) : std::nullopt;
        },
        "The libcudart the stream path uses (found on first use), or None.");
  m.def("require_cuda_runtime", [](const std::string& why) { return cuda::require_runtime(why.c_str()).path; },
        py::arg("why"), "The CUDA runtime's path; raises, saying why it was needed, when there is none.");
  m.attr("CUDA_RUNTIME_ENV") = cuda::kRuntimeEnv;
}

}  // namespace kt::py_bind
