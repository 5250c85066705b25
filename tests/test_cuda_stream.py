"""cuda_stream without a CUDA runtime: CPU tensors give exactly the result of cuda_stream=None
whatever the stream value, and what needs a runtime says so. (With a runtime: the stand-in tests
in test_cuda_stream_standin.py, the GPU tests in tests/gpu.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from kt_kernel import _ext

E, TOPK, H, I = 8, 2, 64, 32


@pytest.fixture
def no_runtime():
    if _ext.cuda_runtime_path() is not None:
        pytest.skip(f"this process has loaded the CUDA runtime {_ext.cuda_runtime_path()}")


@pytest.fixture(scope="module")
def shape(moe):
    return moe.Shape(E, TOPK, H, I)


@pytest.mark.parametrize("stream", [0, 1, 0x7F3A5C000000], ids=["default", "one", "handle"])
def test_cpu_tensors_ignore_the_stream(moe, shape, stream, no_runtime):
    layer = moe.layer("BF16", shape)
    x, ids, w = moe.inputs(shape, 9, seed=1)
    want = layer.forward(x, ids, w)
    assert torch.equal(layer.forward(x, ids, w, cuda_stream=stream), want)
    layer.submit_forward(x, ids, w, cuda_stream=stream)
    assert torch.equal(layer.sync_forward(x, cuda_stream=stream), want)
    assert _ext.cuda_runtime_path() is None, "the CPU path looked for a CUDA runtime and loaded one"


def test_a_torch_stream_without_a_runtime_says_so(moe, shape, no_runtime):
    layer = moe.layer("BF16", shape)
    stream = object.__new__(torch.cuda.ExternalStream)  # what a CUDA build would hand us
    with pytest.raises(RuntimeError, match=f"torch.cuda.Stream.*no(ne)? .*{_ext.CUDA_RUNTIME_ENV}"):
        layer.forward(*moe.inputs(shape, 2), cuda_stream=stream)
    assert layer._pending is None


def test_a_bad_runtime_path_is_named_and_cpu_tensors_still_work(tmp_path):
    """In a fresh process: KT_KERNEL_CUDART naming no library fails where a runtime is required,
    and CPU tensors with a stream still run."""
    script = f"""
import torch, kt_kernel
from kt_kernel import _ext
w = kt_kernel.KTMoEWrapper(0, {E}, {TOPK}, {H}, {I}, cpuinfer_threads=1, method="BF16")
g = torch.Generator().manual_seed(0)
w.load_weights_from_tensors(torch.randn({E}, {I}, {H}, generator=g), torch.randn({E}, {I}, {H}, generator=g),
                            torch.randn({E}, {H}, {I}, generator=g))
x, ids, wt = torch.randn(3, {H}, generator=g), torch.zeros(3, {TOPK}, dtype=torch.int64), torch.ones(3, {TOPK})
assert torch.equal(w.forward(x, ids, wt, cuda_stream=7), w.forward(x, ids, wt))
try:
    _ext.require_cuda_runtime("this test")
except RuntimeError as e:
    print("ERROR:", e)
"""
    env = dict(os.environ, **{_ext.CUDA_RUNTIME_ENV: str(tmp_path / "missing" / "libcudart.so")})
    done = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"ERROR: cannot load the CUDA runtime {tmp_path / 'missing' / 'libcudart.so'}" in done.stdout
