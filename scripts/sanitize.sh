#!/usr/bin/env bash
# The C++ core under the sanitizers: the engine's stress driver (tests/cpp) under ThreadSanitizer,
# then kt_kernel._ext built with -fsanitize=address,undefined into build/sanitize and the engine,
# lifecycle, error, edge, deferral and stand-in CUDA stream tests run with it (the tests' own
# subprocesses too). Exit status 0 only when every test passes and no sanitizer reported anything
# (every finding aborts the process).
# Needs the package installed in the active Python (pip install -e ".[test]") for the Python side.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CXX=${CXX:-c++}
BUILD=build/sanitize

# ThreadSanitizer on the engine alone (queue, stages, errors, engines released while in use): a
# C++ driver, since an uninstrumented Python would hide the races that matter behind false ones.
mkdir -p "$BUILD"
"$CXX" -std=c++20 -O1 -g -fsanitize=thread -Icpp/include -Icpp/src cpp/src/runtime/engine.cpp \
  tests/cpp/engine_stress.cpp -o "$BUILD/engine_stress_tsan" -pthread
TSAN_OPTIONS=halt_on_error=1 "$BUILD/engine_stress_tsan"

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$CXX" \
  -DKT_SANITIZE=address,undefined -DPython_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build "$BUILD" --target _ext
ext=$(ls "$BUILD"/_ext*.so)

# kt_kernel._ext is taken from the sanitized build, ahead of the installed (or editable) package's,
# in this interpreter and in every interpreter the tests start (they inherit PYTHONPATH).
mkdir -p "$BUILD/site"
cat > "$BUILD/site/sitecustomize.py" <<'PY'
import importlib.util
import os
import sys


class SanitizedExt:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "kt_kernel._ext":
            return importlib.util.spec_from_file_location(name, os.environ["KT_SANITIZED_EXT"])
        return None


sys.meta_path.insert(0, SanitizedExt)
PY
export KT_SANITIZED_EXT="$PWD/$ext"
export PYTHONPATH="$PWD/$BUILD/site${PYTHONPATH:+:$PYTHONPATH}"
# Python itself is not instrumented: the ASan runtime must be loaded first, and libstdc++ with it
# (ASan finds __cxa_throw at startup; Python does not link libstdc++). Leaks are not checked (the
# interpreter keeps memory alive at exit by design).
export LD_PRELOAD="$("$CXX" -print-file-name=libasan.so):$("$CXX" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

"$PYTHON" -c "import kt_kernel._ext as e, os; assert e.__file__ == os.environ['KT_SANITIZED_EXT'], e.__file__"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_lifecycle.py tests/test_errors.py \
  tests/test_moe_edges.py tests/test_deferred.py tests/test_cuda_stream_standin.py tests/test_gguf_formats.py \
  tests/test_gguf_moe.py::test_layout_packs_and_unpacks_the_files_blocks "$@"
