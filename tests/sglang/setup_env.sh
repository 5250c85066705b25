#!/usr/bin/env bash
# Builds the SGLang environment of tests/sglang (idempotent): a virtual environment with
# torch 2.13.0 (CPU), sglang and the packages in requirements.txt (all --no-deps: never SGLang's
# CUDA dependency set), and kt_kernel from this checkout (its own build folder, rebuilt
# incrementally on every run so that it matches the sources).
# KT_SGLANG_VENV: where (default build/sglang-venv); KT_SGLANG_WHEELS: an optional folder of
# downloaded wheels to look in first.
# Exit status 3: the third-party environment could not be built (no network, a package gone);
# anything else non-zero: kt_kernel did not build or import there.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${KT_SGLANG_VENV:-$repo/build/sglang-venv}"
reqs="$repo/tests/sglang/requirements.txt"
stamp="$venv/.kt-sglang-requirements"
find_links=()
[ -n "${KT_SGLANG_WHEELS:-}" ] && find_links=(--find-links "$KT_SGLANG_WHEELS")

build_third_party() {
    rm -rf "$venv"
    python3 -m venv "$venv" &&
    "$venv/bin/python" -m pip install -q "${find_links[@]}" torch==2.13.0 &&
    "$venv/bin/python" -m pip install -q --no-deps "${find_links[@]}" -r "$reqs" &&
    cp "$reqs" "$stamp"
}
if ! cmp -s "$reqs" "$stamp"; then
    build_third_party || { echo "setup_env.sh: the SGLang environment could not be built in $venv" >&2; exit 3; }
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -Cbuild-dir="$repo/build/sglang-kt" -e "$repo"
"$venv/bin/python" -c "import sglang, torch, kt_kernel._ext; print('sglang', sglang.__version__, 'torch', torch.__version__)"
