// kt_kernel._ext: the private extension. The Python package (kt_kernel/) is the public API.
#include "bindings/bindings.h"

PYBIND11_MODULE(_ext, m) {
  m.doc() = "kt_kernel native core (private; use the kt_kernel package)";
  kt::py_bind::register_cpu(m);
  kt::py_bind::register_formats(m);
  kt::py_bind::register_moe(m);
  kt::py_bind::register_probe(m);
  kt::py_bind::register_amx(m);
  kt::py_bind::register_stream(m);
}
