"""Builds and drives the stand-in CUDA runtime (standin_cudart.cpp) for the stream-path tests."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("standin_cudart.cpp")


def build(folder: Path) -> Path:
    """Compiles the stand-in into folder with the system C++ compiler; returns the library path."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (set CXX) to build the stand-in CUDA runtime")
    lib = folder / "libcudart_standin.so"
    subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-o", str(lib), str(SOURCE), "-lpthread"],
                   check=True, capture_output=True, text=True)
    return lib


class Standin:
    """ctypes access to the stand-in: streams, graphs, "device" tensors (host memory the runtime
    reports as device memory) and the test helpers."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        for name, args in (("cudaStreamCreate", [ctypes.POINTER(vp)]), ("cudaStreamDestroy", [vp]),
                           ("cudaStreamSynchronize", [vp]), ("cudaStreamBeginCapture", [vp, ctypes.c_int]),
                           ("cudaStreamEndCapture", [vp, ctypes.POINTER(vp)]),
                           ("cudaGraphInstantiate", [ctypes.POINTER(vp), vp, ctypes.c_ulonglong]),
                           ("cudaGraphLaunch", [vp, vp]), ("cudaGraphDestroy", [vp]), ("cudaGraphExecDestroy", [vp]),
                           ("cudaMalloc", [ctypes.POINTER(vp), sz]), ("cudaFree", [vp]),
                           ("cudaMemcpyAsync", [vp, vp, sz, ctypes.c_int, vp]),
                           ("standin_sleep_then_copy", [vp, ctypes.c_int, vp, vp, sz]),
                           ("standin_violations", []), ("standin_host_allocs", [])):
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        self._device: list[int] = []

    def _ok(self, err: int, what: str) -> None:
        if err:
            raise RuntimeError(f"stand-in {what} failed with error {err}")

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return s.value

    def destroy_stream(self, s: int) -> None:
        self._ok(self.lib.cudaStreamDestroy(s), "cudaStreamDestroy")

    def synchronize(self, s: int) -> None:
        self._ok(self.lib.cudaStreamSynchronize(s), "cudaStreamSynchronize")

    def device_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of t in stand-in device memory (a CPU-typed tensor over it)."""
        n = t.numel() * t.element_size()
        p = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(p), n), "cudaMalloc")
        self._device.append(p.value)
        d = torch.frombuffer((ctypes.c_char * n).from_address(p.value), dtype=t.dtype).view(t.shape)
        d.copy_(t)
        return d

    def copy_async(self, dst: torch.Tensor, src: torch.Tensor, s: int) -> None:
        """cudaMemcpyAsync of src into dst (same size) in the order of s."""
        n = src.numel() * src.element_size()
        self._ok(self.lib.cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), n, 3, s), "cudaMemcpyAsync")

    def sleep_then_copy(self, s: int, ms: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        n = src.numel() * src.element_size()
        self._ok(self.lib.standin_sleep_then_copy(s, ms, dst.data_ptr(), src.data_ptr(), n), "sleep_then_copy")

    def begin_capture(self, s: int) -> None:
        self._ok(self.lib.cudaStreamBeginCapture(s, 0), "cudaStreamBeginCapture")

    def end_capture(self, s: int) -> int:
        """Ends the capture; returns an instantiated graph."""
        g, e = ctypes.c_void_p(), ctypes.c_void_p()
        self._ok(self.lib.cudaStreamEndCapture(s, ctypes.byref(g)), "cudaStreamEndCapture")
        self._ok(self.lib.cudaGraphInstantiate(ctypes.byref(e), g, 0), "cudaGraphInstantiate")
        self._ok(self.lib.cudaGraphDestroy(g), "cudaGraphDestroy")
        return e.value

    def launch(self, graph: int, s: int) -> None:
        self._ok(self.lib.cudaGraphLaunch(graph, s), "cudaGraphLaunch")

    def violations(self) -> int:
        return self.lib.standin_violations()

    def host_allocs(self) -> int:
        return self.lib.standin_host_allocs()

    def free_device(self) -> None:
        for p in self._device:
            self._ok(self.lib.cudaFree(p), "cudaFree")
        self._device.clear()
