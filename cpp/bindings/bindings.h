#pragma once
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "kt/formats.h"

namespace kt::py_bind {
void register_cpu(pybind11::module_& m);
void register_formats(pybind11::module_& m);
void register_moe(pybind11::module_& m);
void register_probe(pybind11::module_& m);
void register_amx(pybind11::module_& m);
void register_stream(pybind11::module_& m);

// The DType of a dtype name as the Python wrapper passes it.
inline DType dtype_from(const std::string& s) {
  if (s == "float32") return DType::f32;
  if (s == "bfloat16") return DType::bf16;
  if (s == "float16") return DType::f16;
  throw std::invalid_argument("unsupported dtype " + s + "; expected float32, bfloat16 or float16");
}
}  // namespace kt::py_bind
