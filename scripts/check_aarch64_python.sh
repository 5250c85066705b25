#!/usr/bin/env bash
# The Python package on aarch64 Linux, checked without ARM hardware: Debian bookworm's arm64 CPython
# 3.11 in a sysroot, PyPI's aarch64 wheels (torch 2.9.1, the last CPU-only aarch64 torch on PyPI),
# and kt_kernel's extension _ext cross-compiled with Debian's g++-aarch64-linux-gnu, all run by
# qemu-user:
# - `import kt_kernel`; cpu_info() reports each CPU model's features and tiers;
# - a KTMoEWrapper layer at every ARM tier against a torch fp32 layer (tests/aarch64/smoke.py);
# - a subset of the pytest suite that runs in minutes under emulation (SUITE below).
# Needs network to a Debian mirror and PyPI on the first run only; everything it fetches is cached
# under build/aarch64-python (a second run rebuilds only what changed).
#   sudo apt-get install g++-aarch64-linux-gnu qemu-user      # once; and pip install cmake ninja pybind11
#   bash scripts/check_aarch64_python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
HOST_PYTHON=${HOST_PYTHON:-python3}   # runs pip download and pybind11's CMake lookup only
for tool in "$CXX" "$QEMU" cmake ninja apt-get dpkg-deb "$HOST_PYTHON"; do
  command -v "$tool" >/dev/null || { echo "check_aarch64_python: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user; pip install cmake ninja pybind11)" >&2; exit 2; }
done
ROOT=$PWD/build/aarch64-python
SYSROOT=$ROOT/sysroot
mkdir -p "$ROOT"
t_start=$SECONDS
step() { echo "== $* ($((SECONDS - t_start)) s)"; }

# ---- 1. the arm64 sysroot: Debian's python3.11 and the libraries it and _ext link to ---------------
# A private apt state (own sources, arm64 only, empty dpkg status) resolves the dependency closure
# and downloads the .debs without touching the host's apt or dpkg; dpkg-deb -x unpacks them (no
# maintainer scripts run: none of these packages needs one to work).
DEBS="python3.11 libpython3.11-dev libstdc++6 libgcc-s1"
APT=$ROOT/apt
apt_opts=(-o Dir::Etc="$APT/etc" -o Dir::Etc::SourceList="$APT/etc/sources.list"
          -o Dir::Etc::SourceParts="$APT/etc/sources.list.d" -o Dir::Etc::Preferences="$APT/etc/preferences"
          -o Dir::Etc::PreferencesParts="$APT/etc/preferences.d" -o Dir::State="$APT/state"
          -o Dir::State::status="$APT/state/status" -o Dir::Cache="$APT/cache"
          -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 -q)
if [ "$(cat "$SYSROOT/.debs" 2>/dev/null)" != "$DEBS" ]; then
  step "arm64 sysroot: $DEBS"
  mkdir -p "$APT/etc/sources.list.d" "$APT/etc/preferences.d" "$APT/state/lists/partial" "$APT/cache/archives/partial"
  : > "$APT/state/status"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  # the host's own Debian mirrors (its apt sources: deb822 URIs or one-line entries), for arm64
  # (sed's status is not asked: a host has either kind of file, or both)
  mirrors=$( (sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
              sed -n 's/^deb \(\[[^]]*\] *\)\?\([^ ]*\).*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true) |
            tr ' ' '\n' | grep -v '^$' | sort -u)
  main=$(echo "$mirrors" | grep -v -- '-security' | head -1)
  security=$(echo "$mirrors" | grep -- '-security' | head -1)
  [ -n "$main" ] || { echo "check_aarch64_python: no Debian mirror in the host's apt sources" >&2; exit 2; }
  {
    echo "deb [arch=arm64 signed-by=$keyring] $main bookworm main"
    echo "deb [arch=arm64 signed-by=$keyring] $main bookworm-updates main"
    [ -z "$security" ] || echo "deb [arch=arm64 signed-by=$keyring] $security bookworm-security main"
  } > "$APT/etc/sources.list"
  apt-get "${apt_opts[@]}" update >/dev/null
  # shellcheck disable=SC2086
  apt-get "${apt_opts[@]}" install --download-only --no-install-recommends -y $DEBS >/dev/null
  rm -rf "$SYSROOT"
  mkdir -p "$SYSROOT"
  for deb in "$APT"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  echo "$DEBS" > "$SYSROOT/.debs"
fi
# The interpreter as a host program: qemu-user with the sysroot's loader and libraries (-L) on the
# CPU model $KT_QEMU_CPU. It is also sys.executable (-0 sets argv[0], from whose folder Python finds
# its prefix): binfmt_misc may be absent (containers), and tests start `sys.executable -c ...`.
PY=$SYSROOT/usr/bin/python3.11-qemu
cat > "$PY" <<EOF
#!/bin/sh
exec "$(command -v "$QEMU")" -L "$SYSROOT" -cpu "\${KT_QEMU_CPU:-max,sve256=on}" -0 "\$0" "$SYSROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$PY"

# ---- 2. PyPI's aarch64 wheels, unpacked into one site folder ---------------------------------------
# torch 2.9.1: the last release whose aarch64 wheel on PyPI is the CPU build (later ones are CUDA
# builds, 400+ MB); its dependencies are listed by hand (--no-deps) because pip evaluates
# environment markers for the host, where torch's metadata adds the x86-64 CUDA packages.
# The rest resolves normally (no platform markers): kt_kernel's dependencies (pyproject.toml) but
# compressed-tensors, which only the int4-release tests import (it brings transformers), the tests'
# safetensors and pytest.
TORCH="torch==2.9.1 filelock typing-extensions sympy networkx jinja2 fsspec"
REQS="numpy xxhash tqdm gguf>=0.18 safetensors pytest"
WHEELS=$ROOT/wheels
SITE=$SYSROOT/usr/local/lib/python3.11/dist-packages  # Debian's site folder for pip's packages
pip_target=(--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
            --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311)
if [ "$(cat "$SITE/.reqs" 2>/dev/null)" != "$TORCH $REQS" ]; then
  step "aarch64 wheels: $TORCH $REQS"
  pip_log=$ROOT/pip.log
  pip() { "$HOST_PYTHON" -m pip "$@" >> "$pip_log" 2>&1 || { cat "$pip_log" >&2; exit 1; }; }
  : > "$pip_log"
  # shellcheck disable=SC2086
  pip download "${pip_target[@]}" -d "$WHEELS" --no-deps $TORCH
  # shellcheck disable=SC2086
  pip download "${pip_target[@]}" -d "$WHEELS" $REQS
  rm -rf "$SITE"
  pip install "${pip_target[@]}" --no-index --find-links "$WHEELS" --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
  echo "$TORCH $REQS" > "$SITE/.reqs"
fi

# ---- 3. _ext cross-compiled, in a copy of the package ----------------------------------------------
# CMakeLists.txt as a native aarch64 build would run it (scikit-build-core's Release, no extra
# flags), with the target's CPython headers and extension suffix: the host interpreter only gives
# pybind11's CMake folder. Debian splits pyconfig.h by architecture (python3.11/pyconfig.h includes
# <aarch64-linux-gnu/python3.11/pyconfig.h>); a staged copy of the headers holds the arm64 one in
# its place, so that the include path needs no sysroot folder holding libc headers too.
PYINC=$ROOT/include/python3.11
if [ ! -f "$PYINC/.stamp" ] || [ "$SYSROOT/.debs" -nt "$PYINC/.stamp" ]; then
  rm -rf "$PYINC"
  mkdir -p "$(dirname "$PYINC")"
  cp -r "$SYSROOT/usr/include/python3.11" "$PYINC"
  cp "$SYSROOT/usr/include/aarch64-linux-gnu/python3.11/pyconfig.h" "$PYINC/pyconfig.h"
  touch "$PYINC/.stamp"
fi
EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so
BUILD=$ROOT/ext-build
step "_ext for aarch64 (cmake + ninja in $BUILD)"
toolchain=()  # read on the first configure only (CMake warns of it as unused afterwards)
[ -f "$BUILD/CMakeCache.txt" ] || toolchain=(-DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake)
cmake -S . -B "$BUILD" -G Ninja "${toolchain[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$CXX" \
  -DPython_EXECUTABLE="$("$HOST_PYTHON" -c 'import sys; print(sys.executable)')" \
  -DPython_INCLUDE_DIR="$PYINC" -DPYTHON_MODULE_EXTENSION="$EXT_SUFFIX" >/dev/null
ninja -C "$BUILD" _ext >/dev/null
PKG=$ROOT/pkg
rm -rf "$PKG"
mkdir -p "$PKG"
cp -r kt_kernel "$PKG/kt_kernel"
find "$PKG" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$PKG" -name '*.so' -delete
cp "$BUILD/_ext$EXT_SUFFIX" "$PKG/kt_kernel/"
# kt_kernel is found before sys.path, as an editable install's finder does: tests and the command
# lines start `python -c` / `python -m` in the repository, whose source kt_kernel (no _ext) the
# working directory's sys.path entry would put first.
cat > "$SITE/kt_kernel_aarch64_check.pth" <<EOF
import sys; sys.meta_path.insert(0, type("KtKernelFinder", (), {"find_spec": staticmethod(lambda name, path=None, target=None: __import__("importlib.machinery", fromlist=["PathFinder"]).PathFinder.find_spec(name, ["$PKG"]) if name == "kt_kernel" else None)}))
EOF

# ---- 4. import, cpu_info and a layer per tier and method on each CPU model --------------------------
# CPU model -> the flags cpu_info() must report and the best tier (as scripts/check_aarch64.sh's
# driver checks them); every tier x method on the model that has them all, the best tier elsewhere.
order=(cortex-a53 cortex-a76 "max,sve=off" "max,sve128=on" "max,sve512=on" "max,sve256=on")
declare -A FLAGS=(
  [cortex-a53]="asimd"
  [cortex-a76]="asimd asimddp"
  [max,sve=off]="asimd asimddp i8mm bf16"
  [max,sve128=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve256=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve512=on]="asimd asimddp i8mm bf16 sve sve2"
)
declare -A BEST=([cortex-a53]=neon [cortex-a76]=neon_dotprod [max,sve=off]=neon_bf16
                 [max,sve128=on]=sve [max,sve256=on]=sve [max,sve512=on]=sve)
for model in "${order[@]}"; do
  tiers=(--tiers "${BEST[$model]}")
  [ "$model" = "max,sve256=on" ] && tiers=()
  log=$ROOT/check_package_${model//[,=]/_}.log
  step "-cpu $model: tests/aarch64/check_package.py ${tiers[*]}"
  if ! KT_QEMU_CPU=$model "$PY" -P tests/aarch64/check_package.py --flags "${FLAGS[$model]}" \
       --best "${BEST[$model]}" "${tiers[@]}" > "$log" 2>&1; then
    grep -v "^ok " "$log" >&2
    echo "check_aarch64_python: tests/aarch64/check_package.py failed on -cpu $model (log: $log)" >&2
    exit 1
  fi
  head -1 "$log"
done

# ---- 5. the pytest suite's files that run in minutes under emulation (-cpu max,sve256=on: every tier)
# Whole files: CPU features and the ISA option, errors, engine, lifecycle, AMX emulator, GGUF and
# GPTQ loaders, integrity, command lines (their subprocesses run the same qemu wrapper); the GGUF and
# FP8-release layers at the generic and sve tiers (all six take ~3x longer). Left out: files that
# need transformers (not installed: minutes per model under emulation; test_mxfp4, test_autogptq's
# release tests), test_numa (qemu-user 7.2 has no mbind: ENOSYS), test_probe (x86 expectations),
# SGLang and GPU tests. Deselected, each with its reason:
SUITE=(tests/test_cpu_features.py tests/test_isa_option.py tests/test_errors.py tests/test_engine.py
       tests/test_amx_emulator.py tests/test_calibration.py tests/test_cli_errors.py
       tests/test_gguf_loader.py tests/test_gptq.py tests/test_layering.py tests/test_integrity.py)
MOE_SUITE=(tests/test_gguf_moe.py tests/test_fp8_release.py)
# test_lifecycle at the neon tier: its BF16 layers at the BF16 tiers run qemu's BFDOT/BFMMLA
# helpers (a 128-token forward ~3 s, against 0.5 s by FMLA), and its 150 reloads racing forwards
# then outrun the test's 120 s; what it checks (threads, reloads, exit) is the engine's, not a tier's.
LIFECYCLE_SUITE=(tests/test_lifecycle.py)
DESELECT=(
  # qemu-user shows the host's x86 /proc/cpuinfo (on ARM hardware the test skips itself)
  tests/test_cpu_features.py::test_family_and_model_are_the_kernels
  # qemu-user 7.2 aborts in a child forked from a process with threads (cpu_exec: cpu == current_cpu)
  tests/test_lifecycle.py::test_fork_child_uses_the_inherited_wrapper
  tests/test_lifecycle.py::test_multiprocessing_fork_children_use_the_inherited_wrapper
  # qemu-user 7.2 keeps ~280 KB of each exited guest thread (plain Python threads too, none
  # natively), so the RSS bound fails after 160 engines; the thread count part passes
  tests/test_lifecycle.py::test_wrappers_coming_and_going_stay_bounded
)
deselect=()
for t in "${DESELECT[@]}"; do deselect+=(--deselect "$t"); done
pytest_log=$ROOT/pytest.log
step "pytest under -cpu max,sve256=on: ${#SUITE[@]} files, ${LIFECYCLE_SUITE[*]} at neon, then ${MOE_SUITE[*]} at the generic and sve tiers"
export CXX=$CXX
: > "$pytest_log"
status=0
"$PY" -P -m pytest -p no:cacheprovider -q -rfE "${deselect[@]}" "${SUITE[@]}" >> "$pytest_log" 2>&1 || status=1
KT_KERNEL_ISA=neon "$PY" -P -m pytest -p no:cacheprovider -q -rfE "${deselect[@]}" "${LIFECYCLE_SUITE[@]}" >> "$pytest_log" 2>&1 || status=1
"$PY" -P -m pytest -p no:cacheprovider -q -rfE -k "generic or sve" "${MOE_SUITE[@]}" >> "$pytest_log" 2>&1 || status=1
results=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$pytest_log" | sed 's/=//g; s/^ *//; s/ *$//' | paste -sd';')
if [ "$status" != 0 ]; then
  grep -E "^(FAILED|ERROR) " "$pytest_log" >&2
  echo "check_aarch64_python: pytest failed under emulation ($results; log: $pytest_log)" >&2
  exit 1
fi
echo "check_aarch64_python: ok in $((SECONDS - t_start)) s: import, cpu_info and every tier x method on ${#order[@]} CPU models; pytest: $results (${#DESELECT[@]} x86-only or emulation-only deselected)"
