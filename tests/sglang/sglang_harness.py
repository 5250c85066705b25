"""SGLang's real FusedMoE with KT enabled, on this CPU. Imported only inside the SGLang venv.

Shims (SGLang's CUDA assumptions only; everything else is SGLang's own code):
  1. torch.cuda.current_stream(device) -> an object whose .cuda_stream is 0. KTEPWrapperMethod
     reads ``torch.cuda.current_stream(x.device).cuda_stream`` and passes that int to
     submit_forward / sync_forward; on a CUDA machine it is the current stream's handle, and the
     default stream's handle is 0. kt_kernel receives SGLang's value unchanged.
  2. torch.cuda.synchronize -> no-op: called before load_weights; a CPU build has no CUDA work.
  3. torchvision: SGLang's multimodal modules import it at import time, and nothing this test
     runs uses it. PyPI's torchvision wheels are CUDA builds: installed with their dependencies
     they replace this CPU torch with a CUDA one; without them their operators fail to register
     against the CPU torch 2.13.0. Stub modules answer those imports; transformers' own
     torchvision probe is made first, so it sees the truth (not installed).
  4. torch.compile -> identity: SGLang compiles ``mask_cpu_expert_ids`` (the in-place
     ``topk_ids[topk_ids >= num_gpu_experts] = -1``) with inductor (Triton code on a GPU); the shim runs
     SGLang's function body eagerly instead, the same in-place write.
  5. The GPU experts' kernel: ``UnquantizedFusedMoEMethod.apply`` (the GPU method KT wraps) runs
     SGLang's own torch MoE, ``moe_forward_native``, instead of its Triton/CUDA kernel. That
     function has no notion of the -1 ids the CUDA kernels skip (and counts an id once per row),
     so the shim sends the -1 entry at top-k position k to an all-zero expert of its own, slot
     num_gpu_experts + k, with weight 0. SGLang's CPU engine (SGLANG_USE_CPU_ENGINE=1) would pick
     that function itself but needs the CPU build of sgl_kernel, which is not on PyPI.

Whole model (check_sglang_model.py) adds:
  6. vllm._custom_ops: SGLang's RotaryEmbedding imports vllm's rotary CUDA kernel at construction on
     a host that is neither CUDA nor running SGLang's CPU engine (SGLANG_USE_CPU_ENGINE=1, whose
     imports need sgl_kernel's CPU build: ``from sgl_kernel import copy_all_layer_kv_cache_cpu`` in
     mem_cache/memory_pool.py). The forward takes RotaryEmbedding.forward_native (CustomOp's dispatch
     without CUDA); the stub's kernel raises if anything calls it.
  7. ModelRunner is not run: it is the server's GPU runtime (it sizes the KV cache from
     torch.cuda.mem_get_info through get_available_gpu_memory, sets the CUDA device, captures CUDA
     graphs). sglang_model / model_forward build what it hands the model from SGLang's own classes:
     torch.distributed on gloo with SGLang's initialize_model_parallel (TP = PP = 1), ReqToTokenPool,
     MHATokenToKVPool, TorchNativeAttnBackend (``--attention-backend torch_native``), ForwardBatch
     (one EXTEND request) and the forward context; a namespace carries the device and the two pools
     to the backend, which reads nothing else from the runner.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

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
        num_gpu, top_k = layer.w13_weight.shape[0], ids.shape[1]
        skipped = ids < 0
        zero_slots = torch.arange(num_gpu, num_gpu + top_k, dtype=ids.dtype).expand_as(ids)
        kept = topk_output._replace(topk_weights=weights.masked_fill(skipped, 0),
                                    topk_ids=torch.where(skipped, zero_slots, ids))
        with_zero_experts = types.SimpleNamespace(
            num_experts=num_gpu + top_k,
            w13_weight=torch.cat([layer.w13_weight, layer.w13_weight.new_zeros(top_k, *layer.w13_weight.shape[1:])]),
            w2_weight=torch.cat([layer.w2_weight, layer.w2_weight.new_zeros(top_k, *layer.w2_weight.shape[1:])]))
        out = moe_forward_native(with_zero_experts, x, kept, self.moe_runner_config)
        return StandardCombineInput(hidden_states=out)

    UnquantizedFusedMoEMethod.apply = gpu_experts


# ---- SGLang's FusedMoE with KT, built from server arguments ------------------------------------


def server_args(model_path, method: str, num_gpu_experts: int, *, deferred: int, chunked_prefill_size: int,
                physical_to_logical_map, redundant: int):
    """SGLang's ServerArgs parsed from the command line a user gives ``sglang.launch_server``,
    published as this process's runtime context (SGLang's own fixture for processes without
    distributed groups)."""
    import argparse
    import json

    from sglang.srt.arg_groups.overrides import model_config_of
    from sglang.srt.eplb.expert_location import (compute_initial_expert_location_metadata,
                                                 set_global_expert_location_metadata)
    from sglang.srt.runtime_context import reset_context
    from sglang.srt.server_args import ServerArgs
    from sglang.test.parallel_groups import publish

    argv = ["--model-path", str(model_path), "--device", "cpu",
            "--kt-weight-path", str(model_path), "--kt-method", method,
            "--kt-num-gpu-experts", str(num_gpu_experts), "--kt-cpuinfer", "2", "--kt-threadpool-count", "2",
            "--kt-max-deferred-experts-per-token", str(deferred),
            "--chunked-prefill-size", str(chunked_prefill_size),
            "--ep-num-redundant-experts", str(redundant),
            "--init-expert-location", json.dumps({"physical_to_logical_map": physical_to_logical_map})]
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    args = ServerArgs.from_cli_args(parser.parse_args(argv))
    reset_context()
    publish(args, role="scheduler")
    config = model_config_of(args)
    set_global_expert_location_metadata(compute_initial_expert_location_metadata(config, moe_ep_rank=0),
                                        allow_overwrite=True)
    return args, config.hf_config


def moe_layer(hf_config, layer_id: int, redundant: int, checkpoint: dict):
    """FusedMoE and TopK as SGLang's Qwen3-MoE block builds them; the experts' weights go through
    FusedMoE's weight loader (GPU slots) and process_weights_after_loading (KTMoEWrapper.load_weights
    with SGLang's physical_to_logical_map, reading --kt-weight-path)."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
    from sglang.srt.layers.moe.topk import TopK
    from sglang.srt.layers.moe.utils import RoutingMethodType

    layer = FusedMoE(num_experts=hf_config.num_experts + redundant, top_k=hf_config.num_experts_per_tok,
                     layer_id=layer_id, hidden_size=hf_config.hidden_size,
                     intermediate_size=hf_config.moe_intermediate_size, params_dtype=torch.bfloat16,
                     prefix=f"model.layers.{layer_id}.mlp.experts", routing_method_type=RoutingMethodType.Renormalize)
    params = dict(layer.named_parameters(prefix="experts"))
    prefix = f"model.layers.{layer_id}.mlp."
    mapping = FusedMoE.make_expert_params_mapping("gate_proj", "down_proj", "up_proj", hf_config.num_experts)
    for name, tensor in checkpoint.items():
        if not name.startswith(prefix + "experts."):
            continue
        short = name[len(prefix):]
        for param_prefix, weight_name, expert_id, shard_id in mapping:
            if weight_name in short:
                param_name = short.replace(weight_name, param_prefix)
                param = params[param_name]
                param.weight_loader(param, tensor, param_name, shard_id=shard_id, expert_id=expert_id)
                break
    layer.quant_method.process_weights_after_loading(layer)
    topk = TopK(top_k=hf_config.num_experts_per_tok, renormalize=hf_config.norm_topk_prob, use_grouped_topk=False,
                layer_id=layer_id)
    topk.bind_runner_backend(layer.runner_backend, routing_method_type=layer.routing_method_type)
    return layer, topk


# ---- SGLang's Qwen3-MoE model with KT ----------------------------------------------------------


def install_model_shims() -> None:
    """Shim 6: a vllm._custom_ops whose rotary kernel raises if called (see the module docstring)."""
    def rotary_embedding(*args, **kwargs):
        raise RuntimeError("vllm's rotary_embedding kernel was called; the CPU forward should use forward_native")

    vllm = types.ModuleType("vllm")
    vllm.__path__ = []
    ops = types.ModuleType("vllm._custom_ops")
    ops.rotary_embedding = rotary_embedding
    sys.modules.setdefault("vllm", vllm)
    sys.modules.setdefault("vllm._custom_ops", ops)


_GROUP_NAMES = ("tp_group", "pp_group", "moe_ep_group", "moe_dp_group", "moe_tp_group", "attn_tp_group",
                "attn_cp_group", "shared_experts_tp_group", "dcp_group")
_groups: dict = {}


def _model_parallel(args) -> None:
    """torch.distributed (gloo, one rank) and SGLang's model-parallel groups (TP = PP = 1), built
    once per process; every call publishes ``args`` as the scheduler's context with those groups
    (SGLang's initialize_model_parallel refuses a second build, and destroy_model_parallel imports
    its HTTP server)."""
    import os

    from sglang.srt.distributed import parallel_state
    from sglang.srt.runtime_context import SpawnRanks, get_parallel, publish, reset_context

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if not torch.distributed.is_initialized():
        parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo")
    reset_context()
    publish(args, role="scheduler", ranks=SpawnRanks(world_rank=0))
    get_parallel().override_permanently(world_group=parallel_state._WORLD)
    if not _groups:
        parallel_state.initialize_model_parallel(backend="gloo")
        for name in _GROUP_NAMES:
            try:
                _groups[name] = getattr(get_parallel(), name)
            except RuntimeError:  # a group SGLang leaves unset at this size
                pass
    else:
        get_parallel().override_permanently(**_groups)


def sglang_model(model_path, method: str, num_gpu_experts: int, *, chunked_prefill_size: int):
    """SGLang's Qwen3MoeForCausalLM from the server arguments a user gives, loaded as SGLang's model
    loader does: ``load_weights`` on the checkpoint's tensors, then every module's
    ``process_weights_after_loading`` (KT's: KTMoEWrapper.load_weights from --kt-weight-path)."""
    import argparse

    from safetensors.torch import load_file
    from sglang.srt.arg_groups.overrides import model_config_of
    from sglang.srt.eplb.expert_location import (compute_initial_expert_location_metadata,
                                                 set_global_expert_location_metadata)
    from sglang.srt.models.qwen3_moe import Qwen3MoeForCausalLM
    from sglang.srt.server_args import ServerArgs

    argv = ["--model-path", str(model_path), "--device", "cpu", "--attention-backend", "torch_native",
            "--kt-weight-path", str(model_path), "--kt-method", method,
            "--kt-num-gpu-experts", str(num_gpu_experts), "--kt-cpuinfer", "2", "--kt-threadpool-count", "2",
            "--chunked-prefill-size", str(chunked_prefill_size)]
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    args = ServerArgs.from_cli_args(parser.parse_args(argv))
    _model_parallel(args)
    config = model_config_of(args)
    set_global_expert_location_metadata(compute_initial_expert_location_metadata(config, moe_ep_rank=0),
                                        allow_overwrite=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(config.dtype)  # as SGLang's loader builds the model
    try:
        model = Qwen3MoeForCausalLM(config=config.hf_config, quant_config=None)
    finally:
        torch.set_default_dtype(default)
    tensors = {}
    for f in sorted(Path(model_path).glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    model.load_weights(list(tensors.items()))
    for module in model.modules():
        quant_method = getattr(module, "quant_method", None)
        if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
            quant_method.process_weights_after_loading(module)
    return model.eval(), config.hf_config


def model_forward(model, hf_config, input_ids):
    """One prefill (EXTEND) of ``input_ids`` as a single request: the final hidden states of every
    position (Qwen3MoeModel.forward) and the last position's logits (the whole model's forward,
    SGLang's LogitsProcessor)."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context
    from sglang.srt.model_executor.runner_utils.forward_batch import set_forward_batch

    L = int(input_ids.shape[0])
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    req_pool = ReqToTokenPool(size=1, max_context_len=L + 1, device="cpu", enable_memory_saver=False)
    kv_pool = MHATokenToKVPool(size=L + 1, page_size=1, dtype=torch.bfloat16, head_num=hf_config.num_key_value_heads,
                               head_dim=head_dim, layer_num=hf_config.num_hidden_layers, device="cpu",
                               enable_memory_saver=False, enable_alt_stream=False)
    cache_loc = torch.arange(1, L + 1)  # KV slot 0 is the pool's padding slot
    req_pool.req_to_token[0, :L] = cache_loc.to(req_pool.req_to_token.dtype)
    backend = TorchNativeAttnBackend(types.SimpleNamespace(device="cpu", req_to_token_pool=req_pool,
                                                           token_to_kv_pool=kv_pool))
    batch = ForwardBatch(forward_mode=ForwardMode.EXTEND, batch_size=1, input_ids=input_ids,
                         req_pool_indices=torch.tensor([0]), seq_lens=torch.tensor([L]), out_cache_loc=cache_loc,
                         seq_lens_sum=L, seq_lens_cpu=torch.tensor([L]), positions=torch.arange(L),
                         extend_num_tokens=L, extend_seq_lens=torch.tensor([L]), extend_prefix_lens=torch.tensor([0]),
                         extend_start_loc=torch.tensor([0]), extend_seq_lens_cpu=[L], extend_prefix_lens_cpu=[0],
                         return_logprob=False, capture_hidden_mode=CaptureHiddenMode.NULL)
    outputs = []
    for run in (lambda: model.model(input_ids, batch.positions, batch),
                lambda: model(input_ids, batch.positions, batch).next_token_logits[0]):
        backend.init_forward_metadata(batch)
        with torch.no_grad(), forward_context(ForwardContext(attn_backend=backend), forward_batch=batch), \
                set_forward_batch(batch):
            outputs.append(run())
    return outputs[0], outputs[1]
