#!/usr/bin/env bash
# The GPU check: builds and installs kt_kernel, then runs tests/gpu. Needs a CUDA machine with a
# CUDA build of torch, pytest, a C++ compiler, cmake, pybind11 and scikit-build-core. Writes the
# log to $OUT/gpu_tests.log when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/../.."
log="${OUT:-.}/gpu_tests.log"
{
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation --no-deps -q . || exit 1
  python3 -P -m pytest -q -rA -W default -o faulthandler_timeout=60 -p no:cacheprovider --noconftest tests/gpu
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
