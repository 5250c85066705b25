"""KTMoEWrapper: the routed experts of one MoE layer, run on the CPU.

Inference engines construct one wrapper per MoE layer, load its weights once and call
``forward`` (or ``submit_forward`` ... ``sync_forward`` to overlap with GPU work) per step.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import NamedTuple, Optional, Sequence

import torch

from kt_kernel import _ext
from kt_kernel.checkpoint import open_checkpoint
from kt_kernel.checkpoint.gguf import is_gguf, open_gguf
from kt_kernel.checkpoint.int4_release import INT4_RELEASE_FORMAT, INT4_RELEASE_METHODS
from kt_kernel.checkpoint.hf import checkpoint_activation, gpt_oss_activation
from kt_kernel.checkpoint.mxfp4 import MXFP4_METHOD, is_mxfp4
from kt_kernel.hf_config import read_config, text_config
from kt_kernel.formats import GGUF_METHOD, METHODS
from kt_kernel.integrations.sglang import resolve_method
from kt_kernel.loading import LayerTarget, load_layer, load_tensors
from kt_kernel.numa import placement as numa_placement
from kt_kernel.threads import all_cores

_FLOAT_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_ID_DTYPES = (torch.int32, torch.int64)
_ROUTING_WEIGHT_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


# the native layer takes these arguments as C int; larger values would fail in the binding
_INT_MAX = 2 ** 31 - 1
# more threads than this is a mistake, not a machine (each one is an OS thread the engine keeps)
MAX_THREADS = 4096
# real models have at most a few hundred experts; the constructor builds per-expert lists, and
# num_experts=2**31 made them tens of GB (the process was killed for memory)
MAX_EXPERTS = 1 << 16


def _check_int(name: str, v, lo: int, hi: int) -> None:
    """Raises unless ``v`` is an int (bools refused: True is not a count) in lo..hi."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name}={v!r} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v!r} is out of range: expected {lo}..{hi}")


def _check_tensor(name: str, t, dims: int, dtypes, shape: Sequence[Optional[int]], cuda_ok: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" and not (cuda_ok and t.device.type == "cuda"):
        raise NotImplementedError(f"{name} is on {t.device}; this argument takes CPU tensors" +
                                  (" or CUDA tensors" if cuda_ok else "") + ". Move it with .cpu().")
    if t.dim() != dims:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {dims} dimensions")
    for i, want in enumerate(shape):
        if want is not None and t.shape[i] != want:
            raise ValueError(f"{name} has shape {tuple(t.shape)}: dimension {i} is {t.shape[i]}, expected {want}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}, expected one of {names}")
    if not t.is_contiguous():
        raise ValueError(f"{name} is not contiguous (strides {t.stride()}); call .contiguous() first")


def _stream_handle(cuda_stream) -> Optional[int]:
    """cuda_stream as a cudaStream_t handle: None, an int handle as engines pass it
    (``torch.cuda.current_stream().cuda_stream``; 0 is the default stream) or a torch.cuda.Stream."""
    if cuda_stream is None:
        return None
    if isinstance(cuda_stream, torch.cuda.Stream):  # ExternalStream included
        _ext.require_cuda_runtime("cuda_stream given as a torch.cuda.Stream")
        return int(cuda_stream.cuda_stream)
    if isinstance(cuda_stream, int) and not isinstance(cuda_stream, bool):
        if cuda_stream < 0:
            raise ValueError(f"cuda_stream={cuda_stream} is not a stream handle (handles are addresses, 0 or positive)")
        return cuda_stream
    raise TypeError(f"cuda_stream must be None, an int cudaStream_t handle or a torch.cuda.Stream, got "
                    f"{type(cuda_stream).__name__}")


def _pointer_list(name: str, ptrs, count: int) -> list[int]:
    """ptrs as a list of ``count`` addresses (non-negative ints)."""
    if isinstance(ptrs, (str, bytes)) or not hasattr(ptrs, "__len__"):
        raise TypeError(f"{name} must be a list of {count} integer addresses, got {type(ptrs).__name__}")
    if len(ptrs) != count:
        raise ValueError(f"{name} has {len(ptrs)} entries, expected gpu_tp_count={count}")
    out = []
    for i, p in enumerate(ptrs):
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"{name}[{i}] must be an integer address, got {type(p).__name__}")
        if not 0 <= p < 2 ** 64:
            raise ValueError(f"{name}[{i}]={p} is not an address")
        out.append(p)
    return out


class CpuInfer:
    """What sglang-kt reaches through ``wrapper.cpu_infer``: ``sync()``."""

    def __init__(self, layer):
        self._layer = layer

    def sync(self) -> None:
        """Returns once every job queued so far on the engine (forwards of every wrapper sharing
        it, their deferred parts, weight writes) has run. Errors stay with the calls that own them
        (``sync_forward``, ``sync_write_weight_scale_to_buffer``)."""
        self._layer.submit_barrier().wait()  # an empty job: never raises


class _StreamForward(NamedTuple):
    """A forward submitted on a CUDA stream, awaiting sync_forward."""
    stream: int
    tokens: int
    device: torch.device
    dtype: torch.dtype


def _swiglu(swiglu_limit, swiglu_alpha, weight_path, method) -> tuple:
    """The layer's (swiglu_limit, swiglu_alpha). sglang-kt passes both: 0.0 and 0.0 (plain SwiGLU,
    silu(gate) * up) for most models, the clamp and slope of gpt-oss-style experts otherwise. None
    takes the checkpoint's (a gpt-oss checkpoint or release at weight_path: its config.json's
    swiglu_limit and alpha 1.702), else 0.0; a value given must agree with the checkpoint's."""
    for name, v in (("swiglu_limit", swiglu_limit), ("swiglu_alpha", swiglu_alpha)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise TypeError(f"{name} must be a finite float or None, got {v!r}")
    if swiglu_limit is not None and swiglu_limit < 0:
        raise ValueError(f"swiglu_limit={swiglu_limit} must be >= 0 (0: no clamp)")
    stored = None
    if weight_path is not None and os.path.isfile(os.path.join(weight_path, "config.json")):
        # from config.json alone: this runs for every layer's wrapper, before any weight is read
        cfg = text_config(read_config(weight_path, ValueError))
        stored = (gpt_oss_activation(cfg) if method == MXFP4_METHOD and is_mxfp4(weight_path) else
                  checkpoint_activation(cfg))
    got = (swiglu_limit, swiglu_alpha)
    if stored is not None:
        for name, v, want in zip(("swiglu_limit", "swiglu_alpha"), got, stored):
            if v is not None and float(v) != want:
                raise ValueError(f"{name}={v}, but the experts of {weight_path} compute with {name}={want} "
                                 "(config.json; gpt-oss's alpha is 1.702): pass that, or None to take it")
        return stored
    return tuple(0.0 if v is None else float(v) for v in got)


class KTMoEWrapper:
    """The CPU experts of one MoE layer.

    ``topk_ids`` hold physical expert slots; ``physical_to_logical_map[p]`` is the logical expert
    whose weights fill slot ``p``. Slots marked as GPU experts (the first ``num_gpu_experts``
    slots, or those set in ``gpu_experts_mask``) and ids equal to -1 contribute nothing, and
    their weights are not kept in host memory.

    ``max_deferred_experts_per_token = d`` (0 <= d < num_experts_per_tok): per token, the
    ``num_experts_per_tok - d`` slots with the largest routing weights make this forward's output;
    the other ``d`` run in the background and their weighted sum is added to the output of the next
    forward of the wrapper with ``layer_idx + 1`` (same engine, token count and hidden size). The
    last MoE layer must use 0: a deferred part that no layer takes makes this layer's next forward
    raise. docs/design.md, "Deferred experts", has the contract.
    """

    _capture_batch_sizes: list[int] = []

    def __init__(
        self,
        layer_idx: int,
        num_experts: int,
        num_experts_per_tok: int,
        hidden_size: int,
        moe_intermediate_size: int,
        num_gpu_experts: int = 0,
        cpuinfer_threads: Optional[int] = None,
        threadpool_count: int = 1,
        weight_path: Optional[str] = None,
        chunked_prefill_size: int = 512,
        method: str = "AMXINT4",
        cpu_save=False,
        max_deferred_experts_per_token: int = 0,
        numa_nodes=None,
        gpu_experts_mask=None,
        swiglu_limit: Optional[float] = None,
        swiglu_alpha: Optional[float] = None,
    ):
        method = resolve_method(method)
        if method not in METHODS and method != GGUF_METHOD and method not in INT4_RELEASE_METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}, "
                             f"{', '.join(INT4_RELEASE_METHODS)} (compressed-tensors and AutoGPTQ int4 releases), {GGUF_METHOD} (the "
                             "experts of a GGUF file, each projection in the file's type)")
        if not isinstance(cpu_save, (bool, str, os.PathLike)):
            raise TypeError(f"cpu_save must be False, True or a folder path, got {type(cpu_save).__name__}")
        _check_int("layer_idx", layer_idx, 0, _INT_MAX)
        _check_int("num_experts", num_experts, 1, MAX_EXPERTS)
        for name, v in (("num_experts_per_tok", num_experts_per_tok), ("hidden_size", hidden_size),
                        ("moe_intermediate_size", moe_intermediate_size),
                        ("chunked_prefill_size", chunked_prefill_size)):
            _check_int(name, v, 1, _INT_MAX)
        _check_int("threadpool_count", threadpool_count, 1, MAX_THREADS)
        if cpuinfer_threads is not None:
            _check_int("cpuinfer_threads", cpuinfer_threads, 1, MAX_THREADS)
        if num_gpu_experts is not None:
            _check_int("num_gpu_experts", num_gpu_experts, 0, MAX_EXPERTS)
        if num_experts_per_tok > num_experts:
            raise ValueError(f"num_experts_per_tok={num_experts_per_tok} exceeds num_experts={num_experts}")
        d = max_deferred_experts_per_token
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < num_experts_per_tok:
            raise ValueError(f"max_deferred_experts_per_token={d!r} must be an integer in "
                             f"0..num_experts_per_tok-1={num_experts_per_tok - 1}")
        self.layer_idx = layer_idx
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.hidden_size = hidden_size
        self.moe_intermediate_size = moe_intermediate_size
        self.weight_path = weight_path
        self.cpu_save = cpu_save
        self.chunked_prefill_size = chunked_prefill_size
        self.method = method
        if method in INT4_RELEASE_METHODS and cpu_save is not False:
            raise ValueError(f"cpu_save={cpu_save!r} with method {method}: the release is loaded as it is stored, there is "
                             "nothing to save; leave cpu_save False")
        self.max_deferred_experts_per_token = max_deferred_experts_per_token
        self.swiglu_limit, self.swiglu_alpha = _swiglu(swiglu_limit, swiglu_alpha, weight_path, method)
        self.gpu_experts_mask = self._gpu_mask(num_gpu_experts, gpu_experts_mask)
        self.num_gpu_experts = int(self.gpu_experts_mask.sum())
        # LLAMAFILE: the formats of this layer's gate/up and down, from the GGUF file's tensor types
        # an int4 release (RAWINT4, GPTQ_INT4) loads exactly into int4_g32_zp, which no method names
        # (kt_kernel/checkpoint/int4_release.py); LLAMAFILE takes the GGUF file's formats
        self._formats = (self._gguf_formats() if method == GGUF_METHOD else
                         (INT4_RELEASE_FORMAT,) * 2 if method in INT4_RELEASE_METHODS else None)
        threads = all_cores() if cpuinfer_threads is None else cpuinfer_threads
        self.cpuinfer_threads = threads
        self.threadpool_count = threadpool_count
        # numa_nodes: sub-pool p on node numa_nodes[p] (its CPUs, its memory for its weights)
        self.numa_nodes = None if numa_nodes is None else list(numa_nodes)
        pools = [] if numa_nodes is None else numa_placement(numa_nodes, threadpool_count)
        self._engine = _ext.Engine.shared(threads, threadpool_count, pools)
        self._build_native_layer()
        self._pending = None
        self._writes = []  # jobs of submit_write_weight_scale_to_buffer, until synced
        self._weights_from_path = None  # (physical_to_logical_map,) of the last load_weights

    def _build_native_layer(self) -> None:
        self._placed_mask = self.gpu_experts_mask.clone()
        on_cpu = [0 if g else 1 for g in self._placed_mask.tolist()]
        formats = {} if self._formats is None else {"formats": list(self._formats)}
        self._layer = _ext.MoeLayer(self._engine, self.num_experts, self.num_experts_per_tok, self.hidden_size,
                                    self.moe_intermediate_size, self.method, on_cpu, self.chunked_prefill_size,
                                    self.layer_idx, self.max_deferred_experts_per_token, **formats,
                                    swiglu_limit=self.swiglu_limit, swiglu_alpha=self.swiglu_alpha)
        self._stream_layer = _ext.StreamLayer(self._layer)

    def _gguf_formats(self) -> tuple:
        """(gate/up format, down format) of layer ``layer_idx`` of the GGUF file at weight_path,
        checked against this wrapper's sizes (the number of experts at load, where a
        physical_to_logical_map may remap them)."""
        if self.weight_path is None:
            raise ValueError(f"method {GGUF_METHOD} runs the experts of a GGUF file as they are, and no weight_path "
                             "was given: pass weight_path=<a .gguf file, a shard of a split set, or a folder holding "
                             f"one>; weights given as tensors take the methods {', '.join(METHODS)}")
        if self.cpu_save is not False:
            raise ValueError(f"cpu_save={self.cpu_save!r} with method {GGUF_METHOD}: the GGUF file is loaded as it is "
                             "stored, there is nothing to save; leave cpu_save False")
        reader = open_gguf(self.weight_path)
        reader.check_layer(self.layer_idx, GGUF_METHOD, self.hidden_size, self.moe_intermediate_size,
                           num_experts_per_tok=self.num_experts_per_tok)
        return reader.layer_formats(self.layer_idx)

    def _follow_gpu_mask_edits(self) -> None:
        """sglang-kt moves experts between GPU and CPU by editing ``gpu_experts_mask`` in place
        (``.copy_()``) between forwards. A changed mask rebuilds the native layer for the new
        placement and reloads it from ``weight_path`` (experts newly on the CPU need their
        weights); weights given as tensors cannot be reloaded, so that raises."""
        if torch.equal(self.gpu_experts_mask, self._placed_mask):
            return
        moved = torch.nonzero(self.gpu_experts_mask != self._placed_mask).flatten().tolist()
        if self._weights_from_path is None:
            raise RuntimeError(
                f"layer {self.layer_idx}: gpu_experts_mask changed (slots {moved}) but the weights came from "
                "load_weights_from_tensors and cannot be reloaded for the new placement; load them with "
                "load_weights(weight_path) to move experts, or call load_weights_from_tensors again after the edit")
        self.load_weights(*self._weights_from_path)

    def _place_as_masked(self) -> None:
        """Before a load: the native layer for the mask as it is now."""
        if not torch.equal(self.gpu_experts_mask, self._placed_mask):
            self._build_native_layer()
            self.num_gpu_experts = int(self._placed_mask.sum())

    def _gpu_mask(self, num_gpu_experts, mask) -> torch.Tensor:
        if mask is not None:
            mask = torch.as_tensor(mask).to(torch.bool).cpu().flatten()
            if mask.numel() != self.num_experts:
                raise ValueError(f"gpu_experts_mask has {mask.numel()} entries, expected num_experts={self.num_experts}")
            if num_gpu_experts not in (0, None, int(mask.sum())):
                raise ValueError(
                    f"num_gpu_experts={num_gpu_experts} disagrees with gpu_experts_mask, which marks "
                    f"{int(mask.sum())} experts; give one of them"
                )
            return mask
        n = num_gpu_experts or 0
        if not isinstance(n, int) or n < 0 or n > self.num_experts:
            raise ValueError(f"num_gpu_experts={num_gpu_experts!r} must be in 0..num_experts={self.num_experts}")
        mask = torch.zeros(self.num_experts, dtype=torch.bool)
        mask[:n] = True
        return mask

    # ---- weights ------------------------------------------------------------------------

    def load_weights(self, physical_to_logical_map=None) -> None:
        """Loads layer ``layer_idx`` from ``weight_path``: a folder converted by
        convert_cpu_weights.py (checked against this wrapper: format version, method, shapes,
        expert count; only CPU slots are read, from a memory map), or a Hugging Face checkpoint
        folder, whose experts are then quantized at load; with method LLAMAFILE, a GGUF file (or a
        shard of a split set, or a folder holding one), whose blocks are used as they are, from its
        memory map. Slot p gets logical expert ``physical_to_logical_map[p]`` (identity when None)."""
        if self.weight_path is None:
            raise ValueError(f"layer {self.layer_idx}: load_weights needs weight_path (a converted folder or an HF "
                             "checkpoint); none was given to the constructor")
        gguf = self.method == GGUF_METHOD
        if not os.path.isdir(self.weight_path) and not (os.path.isfile(self.weight_path) and is_gguf(self.weight_path)):
            raise FileNotFoundError(f"weight_path {self.weight_path} is not a folder (or a GGUF file)")
        pmap = self._logical_map(physical_to_logical_map)
        self._place_as_masked()
        # a GGUF path under another method: its reader's check_layer names LLAMAFILE
        reader = open_gguf(self.weight_path) if gguf else open_checkpoint(self.weight_path, self.method)
        if gguf and (now := reader.layer_formats(self.layer_idx)) != self._formats:
            raise ValueError(f"layer {self.layer_idx}: {self.weight_path} now stores the experts as {now}, not "
                             f"{self._formats} as when this wrapper was made (the file changed); make a new KTMoEWrapper")
        # float weights are quantized at load, and cpu_save keeps them; a converted folder is loaded as it is
        save = self._save_folder(from_checkpoint=True) if reader.stored_method is None else None
        load_layer(self._layer, self._load_target(), reader, pmap, save)
        self._weights_from_path = (physical_to_logical_map,)

    def _load_target(self) -> LayerTarget:
        return LayerTarget(self.layer_idx, self.method, self.num_experts, self.hidden_size,
                           self.moe_intermediate_size, ~self.gpu_experts_mask, self.cpuinfer_threads)

    def _save_folder(self, from_checkpoint: bool) -> Optional[str]:
        """Where cpu_save keeps the layers this wrapper quantizes at load; None without cpu_save."""
        if self.cpu_save is False:
            return None
        if self.cpu_save is not True:
            return os.fspath(self.cpu_save)
        if from_checkpoint:
            raise ValueError(f"cpu_save=True saves into weight_path, and weight_path {self.weight_path} is the HF "
                             "checkpoint being read; pass cpu_save=FOLDER to name where the converted layers go")
        if self.weight_path is None:
            raise ValueError("cpu_save=True saves the quantized layer into weight_path, and no weight_path was given; "
                             "pass weight_path=FOLDER or cpu_save=FOLDER")
        return self.weight_path

    def _logical_map(self, physical_to_logical_map):
        """physical_to_logical_map as a contiguous int64 tensor of num_experts entries, or None."""
        if physical_to_logical_map is None:
            return None
        pmap = torch.as_tensor(physical_to_logical_map).cpu().flatten()
        if pmap.dtype.is_floating_point or pmap.dtype == torch.bool:
            raise TypeError(f"physical_to_logical_map has dtype {pmap.dtype}, expected an integer dtype")
        if pmap.numel() != self.num_experts:
            raise ValueError(f"physical_to_logical_map has {pmap.numel()} entries, expected num_experts={self.num_experts}")
        return pmap.to(torch.int64).contiguous()

    def load_weights_from_tensors(self, gate_proj, up_proj, down_proj, physical_to_logical_map=None, *,
                                  gate_bias=None, up_bias=None, down_bias=None) -> None:
        """gate_proj, up_proj: [E, I, H]; down_proj: [E, H, I] (E logical experts), CPU tensors of
        one dtype among float32, bfloat16, float16. Quantizes to the method's format and packs.
        gate_bias, up_bias [E, I] and down_bias [E, H] (float CPU tensors, each optional): expert
        biases, as gpt-oss's: g and u get theirs before the activation, and each routed expert
        adds w * (down h + down_bias)."""
        if self.method == GGUF_METHOD:
            raise ValueError(f"method {GGUF_METHOD} loads the experts of a GGUF file (weight_path, load_weights); "
                             f"weights given as tensors take the methods {', '.join(METHODS)}")
        H, I = self.hidden_size, self.moe_intermediate_size
        if not isinstance(gate_proj, torch.Tensor):
            raise TypeError(f"gate_proj must be a torch.Tensor, got {type(gate_proj).__name__}")
        E = gate_proj.shape[0] if gate_proj.dim() == 3 else None
        _check_tensor("gate_proj", gate_proj, 3, _FLOAT_DTYPES, (None, I, H))
        _check_tensor("up_proj", up_proj, 3, _FLOAT_DTYPES, (E, I, H))
        _check_tensor("down_proj", down_proj, 3, _FLOAT_DTYPES, (E, H, I))
        if not (gate_proj.dtype == up_proj.dtype == down_proj.dtype):
            raise TypeError(f"gate_proj, up_proj, down_proj have dtypes {gate_proj.dtype}, {up_proj.dtype}, "
                            f"{down_proj.dtype}; they must share one")
        biases = None
        if any(b is not None for b in (gate_bias, up_bias, down_bias)):
            biases = []
            for name, b, n in (("gate_bias", gate_bias, I), ("up_bias", up_bias, I), ("down_bias", down_bias, H)):
                if b is not None:
                    _check_tensor(name, b, 2, _FLOAT_DTYPES, (E, n))
                    b = b.to(torch.float32).contiguous()
                biases.append(b)
        pmap = self._logical_map(physical_to_logical_map)
        if pmap is None:
            if E != self.num_experts:
                raise ValueError(f"the weights hold {E} experts and no physical_to_logical_map was given; "
                                 f"expected num_experts={self.num_experts}")
            pmap = torch.arange(self.num_experts, dtype=torch.int64)
        self._place_as_masked()
        self._weights_from_path = None
        load_tensors(self._layer, self._load_target(), (gate_proj, up_proj, down_proj), pmap,
                     save=self._save_folder(from_checkpoint=False), biases=biases)

    # ---- forward ------------------------------------------------------------------------

    def submit_forward(self, hidden_states, topk_ids, topk_weights, cuda_stream=None) -> None:
        """Queue the forward and return at once.

        CPU tensors: the inputs are copied before this returns, and any ``cuda_stream`` gives
        exactly the result of None. CUDA tensors (all three on one device): the work is enqueued
        on ``cuda_stream`` (the device's current stream when None): copies of the inputs into
        pinned staging, then a host function that starts the CPU job; the calling thread does
        not wait. ``cuda_stream``: None, an int cudaStream_t handle or a torch.cuda.Stream.
        """
        stream = _stream_handle(cuda_stream)
        if self._pending is not None:
            raise RuntimeError(f"layer {self.layer_idx}: submit_forward called twice without sync_forward")
        self._follow_gpu_mask_edits()
        H, K = self.hidden_size, self.num_experts_per_tok
        _check_tensor("hidden_states", hidden_states, 2, _FLOAT_DTYPES, (None, H), cuda_ok=True)
        M = hidden_states.shape[0]
        _check_tensor("topk_ids", topk_ids, 2, _ID_DTYPES, (M, K), cuda_ok=True)
        _check_tensor("topk_weights", topk_weights, 2, _ROUTING_WEIGHT_DTYPES, (M, K), cuda_ok=True)
        for name, t in (("topk_ids", topk_ids), ("topk_weights", topk_weights)):
            if t.device != hidden_states.device:
                raise ValueError(f"{name} is on {t.device} but hidden_states is on {hidden_states.device}; "
                                 "all three must be on one device")
        if not self._layer.loaded:
            raise RuntimeError(f"layer {self.layer_idx}: forward called before the weights were loaded; "
                               "call load_weights_from_tensors first")
        self._stream_layer.rethrow_error()
        if hidden_states.is_cuda:
            if stream is None:
                stream = torch.cuda.current_stream(hidden_states.device).cuda_stream
            with torch.cuda.device(hidden_states.device):
                self._submit_on_stream(stream, hidden_states, topk_ids, topk_weights)
            return
        if stream is not None and self._in_device_memory(hidden_states, topk_ids, topk_weights):
            self._submit_on_stream(stream, hidden_states, topk_ids, topk_weights)
            return
        # the output buffer is the extension's, shared by the job and this tensor: the job never
        # writes freed memory, whenever the wrapper or the tensor goes
        job, out = self._layer.submit(hidden_states.data_ptr(), _FLOAT_DTYPES[hidden_states.dtype],
                                      topk_ids.data_ptr(), topk_ids.dtype == torch.int64,
                                      topk_weights.data_ptr(), _ROUTING_WEIGHT_DTYPES[topk_weights.dtype], M)
        self._pending = (job, torch.from_numpy(out).view(torch.bfloat16))

    @staticmethod
    def _in_device_memory(*tensors) -> bool:
        """Whether CPU-typed tensors lie in memory the loaded CUDA runtime calls device memory: only
        under a stand-in runtime, whose device memory is host memory (tests/cuda_standin)."""
        names = ("hidden_states", "topk_ids", "topk_weights")
        on_device = [_ext.is_device_pointer(t.data_ptr()) for t in tensors]
        if any(on_device) and not all(on_device):
            raise ValueError(", ".join(n for n, d in zip(names, on_device) if not d) + " not in the CUDA runtime's "
                             "device memory, unlike " + ", ".join(n for n, d in zip(names, on_device) if d))
        if on_device[0] and tensors[0].dtype != torch.bfloat16:
            raise ValueError("hidden_states in device memory of a CPU-typed tensor must be bfloat16: its output "
                             "cannot be converted in stream order without a CUDA device")
        return on_device[0]

    def _submit_on_stream(self, stream: int, x, ids, weights) -> None:
        M = x.shape[0]
        if M:
            self._stream_layer.submit(stream, x.data_ptr(), _FLOAT_DTYPES[x.dtype], ids.data_ptr(),
                                      ids.dtype == torch.int64, weights.data_ptr(),
                                      _ROUTING_WEIGHT_DTYPES[weights.dtype], M)
        self._pending = _StreamForward(stream, M, x.device, x.dtype)

    def sync_forward(self, hidden_states=None, cuda_stream=None) -> torch.Tensor:
        """The submitted forward's output [M, hidden_size]: for CPU inputs a bf16 CPU tensor, after
        waiting for the job; for CUDA inputs a tensor on their device and of hidden_states' dtype,
        returned at once, whose contents are valid in the order of the stream (a host function
        there waits for the job, then the output is copied in). ``cuda_stream`` must be the one
        submit_forward used, or None."""
        stream = _stream_handle(cuda_stream)
        pending = self._pending
        if pending is None:
            raise RuntimeError(f"layer {self.layer_idx}: sync_forward called without submit_forward")
        if isinstance(pending, _StreamForward) and stream is not None and stream != pending.stream:
            raise ValueError(f"layer {self.layer_idx}: sync_forward on stream {stream:#x}, but submit_forward used "
                             f"{pending.stream:#x}; the job starts in that stream's order, so sync on it")
        self._pending = None
        if isinstance(pending, _StreamForward):
            return self._sync_on_stream(pending)
        job, out = pending
        job.wait()
        return out

    def _sync_on_stream(self, pending: _StreamForward) -> torch.Tensor:
        shape, device = (pending.tokens, self.hidden_size), pending.device
        if not pending.tokens:
            self._stream_layer.rethrow_error()
            return torch.empty(shape, dtype=pending.dtype, device=device)
        if device.type != "cuda":  # a stand-in runtime's device memory (bfloat16 only)
            out = torch.empty(shape, dtype=torch.bfloat16)
            self._stream_layer.sync(pending.stream, out.data_ptr())
            return out
        with torch.cuda.device(device), self._torch_stream(pending.stream, device):
            out = torch.empty(shape, dtype=torch.bfloat16, device=device)
            self._stream_layer.sync(pending.stream, out.data_ptr())
            return out if pending.dtype == torch.bfloat16 else out.to(pending.dtype)

    @staticmethod
    def _torch_stream(stream: int, device: torch.device):
        """Makes torch allocate and convert the output on the caller's stream."""
        if stream == torch.cuda.current_stream(device).cuda_stream:
            return contextlib.nullcontext()
        return torch.cuda.stream(torch.cuda.ExternalStream(stream, device=device))

    # sglang-kt calls these two instead of submit_forward / sync_forward when it serves expert LoRA
    # adapters; without adapters here they are the same forward
    def submit_forward_inference(self, hidden_states, topk_ids, topk_weights, cuda_stream) -> None:
        """sglang-kt's name for ``submit_forward`` (same arguments and contract)."""
        self.submit_forward(hidden_states, topk_ids, topk_weights, cuda_stream)

    def sync_forward_inference(self, cuda_stream) -> torch.Tensor:
        """sglang-kt's name for ``sync_forward`` without ``hidden_states``: the output of the
        forward ``submit_forward_inference`` queued, of its inputs' shape, device and (for CUDA
        inputs) dtype; bf16 for CPU inputs."""
        return self.sync_forward(None, cuda_stream)

    def forward(self, hidden_states, topk_ids, topk_weights, cuda_stream=None) -> torch.Tensor:
        """submit_forward, then sync_forward (which does not block for CUDA inputs)."""
        self.submit_forward(hidden_states, topk_ids, topk_weights, cuda_stream)
        return self.sync_forward(hidden_states, cuda_stream)

    __call__ = forward

    # ---- expert weights into a caller's buffers (sglang-kt's dynamic expert update) -----

    def submit_write_weight_scale_to_buffer(self, gpu_tp_count, expert_id, w13_weight_ptrs, w13_scale_ptrs,
                                            w2_weight_ptrs, w2_scale_ptrs) -> None:
        """Queues the copy of expert slot ``expert_id``'s weights, as this wrapper holds them, into
        buffers given by address (``data_ptr()`` of host or pinned tensors: the CPU writes them),
        split over ``gpu_tp_count`` tensor-parallel ranks as SGLang splits the intermediate size I:
        rank r gets channels ``[r*I/T, (r+1)*I/T)`` and

            w13_weight_ptrs[r] -> bf16 [2*I/T, hidden]  gate rows of those channels, then up rows
            w2_weight_ptrs[r]  -> bf16 [hidden, I/T]    the down columns of those channels

        which is one expert of SGLang's unquantized ``w13_weight`` / ``w2_weight``. The values are
        the loaded weights dequantized (exact for BF16) and rounded to bf16. Scales are not written:
        every entry of ``w13_scale_ptrs`` and ``w2_scale_ptrs`` must be 0, as sglang-kt passes for an
        unquantized GPU layer; quantized GPU layouts (its INT4 Marlin and FP8 paths) raise
        NotImplementedError. Returns at once; the write runs on the engine after the forwards
        already queued. The buffers must stay valid until ``sync_write_weight_scale_to_buffer``.
        """
        _check_int("gpu_tp_count", gpu_tp_count, 1, _INT_MAX)
        if self.moe_intermediate_size % gpu_tp_count:
            raise ValueError(f"gpu_tp_count={gpu_tp_count} does not divide moe_intermediate_size="
                             f"{self.moe_intermediate_size}; each rank takes an equal share of the channels")
        _check_int("expert_id", expert_id, 0, self.num_experts - 1)
        lists = {}
        for name, ptrs in (("w13_weight_ptrs", w13_weight_ptrs), ("w13_scale_ptrs", w13_scale_ptrs),
                           ("w2_weight_ptrs", w2_weight_ptrs), ("w2_scale_ptrs", w2_scale_ptrs)):
            lists[name] = _pointer_list(name, ptrs, gpu_tp_count)
        for name in ("w13_weight_ptrs", "w2_weight_ptrs"):
            if 0 in lists[name]:
                raise ValueError(f"{name}[{lists[name].index(0)}] is 0, a null pointer")
        for name in ("w13_scale_ptrs", "w2_scale_ptrs"):
            if any(lists[name]):
                raise NotImplementedError(
                    f"{name} holds non-zero addresses: the caller expects quantized GPU weights with scales "
                    "(sglang-kt's INT4 Marlin or FP8 layouts), which kt_kernel does not write. It writes bf16 "
                    "weights for an unquantized GPU layer: pass 0 for every scale pointer")
        self._follow_gpu_mask_edits()
        if bool(self._placed_mask[expert_id]):
            raise ValueError(f"expert_id={expert_id} is a GPU expert of layer {self.layer_idx}: kt_kernel holds the "
                             "weights of CPU experts only (gpu_experts_mask False)")
        if not self._layer.loaded:
            raise RuntimeError(f"layer {self.layer_idx}: submit_write_weight_scale_to_buffer called before the weights "
                               "were loaded")
        self._writes.append(self._layer.submit_write_bf16(expert_id, gpu_tp_count, lists["w13_weight_ptrs"],
                                                          lists["w2_weight_ptrs"]))

    def sync_write_weight_scale_to_buffer(self) -> None:
        """Waits for every write queued by ``submit_write_weight_scale_to_buffer``; raises the
        first one's error, if any."""
        writes, self._writes = self._writes, []
        error = None
        for job in writes:
            try:
                job.wait()
            except Exception as e:  # the others still ran; wait for them before raising
                error = error or e
        if error is not None:
            raise error

    @property
    def cpu_infer(self) -> "CpuInfer":
        """The engine this wrapper runs on, for sglang-kt's ``wrapper.cpu_infer.sync()``."""
        return CpuInfer(self._layer)

    # ---- introspection ------------------------------------------------------------------

    def memory_nodes(self) -> list:
        """Where the packed weights are, per sub-pool: {memory node: pages} (move_pages; a negative
        key counts pages not present). Call when no load is in flight."""
        out = []
        for pool in range(self.threadpool_count):
            counts: dict = {}
            for node in self._layer.weight_page_nodes(pool):
                counts[node] = counts.get(node, 0) + 1
            out.append(counts)
        return out

    @property
    def kernel_name(self) -> str:
        """The layer's best kernel (the kernel table's row for its format and tier). A tile kernel
        (AMX) runs the experts that get at least ``kernel_min_m`` tokens in a call; the others run
        ``vector_kernel_name``."""
        return self._layer.kernel_name

    @property
    def vector_kernel_name(self) -> str:
        """The kernel of buckets below ``kernel_min_m`` tokens (``kernel_name`` itself when that is
        a vector kernel)."""
        return self._layer.vector_kernel_name

    @property
    def kernel_min_m(self) -> int:
        """Tokens per expert from which ``kernel_name`` runs (0: every bucket)."""
        return self._layer.tile_min_m

    @property
    def kernel_description(self) -> str:
        """``kernel_name``, and for a tile kernel its threshold and the vector kernel below it; a
        down projection in another format (LLAMAFILE) adds its kernel."""
        text = self.kernel_name
        if self.kernel_min_m:
            text += f" from {self.kernel_min_m} tokens per expert, {self.vector_kernel_name} below"
        if self._layer.down_format != self._layer.format:
            text += f"; down {self._layer.down_kernel_name}"
        return text

    @property
    def formats(self) -> tuple:
        """(gate/up format, down format) of the layer: the method's format twice (int4_g32_zp for
        the int4 release methods), or with LLAMAFILE the GGUF file's types (e.g. ("q4_K", "q6_K"))."""
        return self._layer.format, self._layer.down_format

    @property
    def last_kernels(self) -> dict:
        """{physical slot: kernel name} of the latest completed forward's buckets (of its last
        chunk that routed tokens to the slot)."""
        return self._layer.last_kernels

    @property
    def isa_tier(self) -> str:
        """The ISA tier the layer was built for, or "amx_emu" (the test-only emulated AMX kernels)."""
        return self._layer.tier

    @property
    def weight_bytes(self) -> int:
        """Bytes of packed expert weights held in host memory (CPU experts only)."""
        return self._layer.weight_bytes

    # ---- staging buffers per batch size -------------------------------------------------

    @staticmethod
    def set_capture_batch_sizes(sizes) -> None:
        """The batch sizes CUDA graphs will be captured with; call before capturing.

        CPU inputs: the staging buffers of calls with these token counts are kept for reuse.
        CUDA streams: pins, now, for every wrapper alive and every wrapper made later, what a
        captured forward uses, so that capture neither allocates nor blocks: one pinned input
        buffer shared by all layers (stream order serializes its users), one pinned output buffer
        per layer, both sized for the largest batch, and per layer one host-function context per
        batch size. Capturing a batch size not given here raises. Buffers a captured graph uses
        stay allocated until its wrapper is deleted (the shared input: until the process ends).
        Without a CUDA runtime loaded yet, the pinning happens at each layer's first stream call
        outside capture.
        """
        sizes = sorted({int(s) for s in sizes})
        if any(s <= 0 for s in sizes):
            raise ValueError(f"capture batch sizes must be positive, got {sizes}")
        KTMoEWrapper._capture_batch_sizes = sizes
        _ext.set_capture_batch_sizes(sizes)
        _ext.set_stream_capture_batch_sizes(sizes)

    @staticmethod
    def get_capture_batch_sizes() -> list[int]:
        return list(_ext.capture_batch_sizes())

    @staticmethod
    def clear_buffer_cache() -> None:
        _ext.clear_buffer_cache()
