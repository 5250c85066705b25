"""SGLang's real FusedMoE with KT enabled, on this CPU. Imported only inside the SGLang venv.

Shims (SGLang's CUDA assumptions only; everything else is SGLang's own code):
  1. torch.cuda.current_stream(device) -> an object whose .cuda_stream is 0. KTEPWrapperMethod
     reads ``torch.cuda.current_stream(x.device).cuda_stream`` and passes that int to
     submit_forward / sync_forward; on a CUDA machine it is the current stream's handle, and the
     default stream's handle is 0. kt_kernel receives SGLang's value unchanged.
  2. torch.cuda.synchronize -> no-op: called before load_weights; a CPU build has no CUDA work.
  3. torchvision: SGLang's multimodal modules import it at import time; the CPU build of
     torchvision for this torch is not on PyPI (PyPI's is a CUDA build pulling a CUDA torch), and
     nothing this test runs uses it. Stub modules answer those imports; transformers' own
     torchvision probe is made first, so it sees the truth (not installed).
  4. torch.compile -> identity: SGLang compiles ``mask_cpu_expert_ids`` (the in-place
     ``topk_ids[topk_ids >= num_gpu_experts] = -1``); compiling it with inductor on 2 cores takes
     longer than the test and changes nothing it computes.
  5. The GPU experts' kernel: ``UnquantizedFusedMoEMethod.apply`` (the GPU method KT wraps) runs
     SGLang's own torch MoE, ``moe_forward_native``, instead of its Triton/CUDA kernel. That
     function has no notion of the -1 ids the CUDA kernels skip, so the shim gives -1 entries
     weight 0 on slot 0 (zeros when a call has no GPU entry at all). SGLang's CPU engine
     (SGLANG_USE_CPU_ENGINE=1) would pick that function itself but needs the CPU build of
     sgl_kernel, which is not on PyPI.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types

import torch


class _AnyAttr(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _DefaultStream:
    cuda_stream = 0  # the handle of CUDA's default stream


def install_shims() -> None:
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cached: the probe saw no torchvision
    if not any(isinstance(f, _TorchvisionStub) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionStub())
    torch.cuda.current_stream = lambda device=None: _DefaultStream()
    torch.cuda.synchronize = lambda device=None: None
    torch.compile = lambda fn=None, **kwargs: fn if fn is not None else (lambda f: f)

    from sglang.srt.layers.moe.fused_moe_native import moe_forward_native
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput
    from sglang.srt.layers.quantization.unquant import UnquantizedFusedMoEMethod

    def gpu_experts(self, layer, dispatch_output):
        x = dispatch_output.hidden_states
        topk_output = dispatch_output.topk_output
        weights, ids = topk_output.topk_weights, topk_output.topk_ids
        valid = ids >= 0
        if not bool(valid.any()):
            return StandardCombineInput(hidden_states=torch.zeros_like(x))
        kept = topk_output._replace(topk_weights=torch.where(valid, weights, torch.zeros_like(weights)),
                                    topk_ids=torch.where(valid, ids, torch.zeros_like(ids)))
        return StandardCombineInput(hidden_states=moe_forward_native(layer, x, kept, self.moe_runner_config))

    UnquantizedFusedMoEMethod.apply = gpu_experts
