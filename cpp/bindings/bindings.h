#pragma once
#include <pybind11/pybind11.h>

namespace kt::py_bind {
void register_cpu(pybind11::module_& m);
void register_formats(pybind11::module_& m);
void register_moe(pybind11::module_& m);
void register_probe(pybind11::module_& m);
void register_amx(pybind11::module_& m);
}  // namespace kt::py_bind
