"""kt_kernel as an experts implementation of Hugging Face transformers.

transformers (5.7 or later) stores the routed experts of an MoE layer as one module with fused
``gate_up_proj [E, 2I, H]`` and ``down_proj [E, H, I]`` tensors and dispatches its forward
``(hidden_states [M, H], top_k_index [M, K], top_k_weights [M, K]) -> [M, H]`` through
``ALL_EXPERTS_FUNCTIONS`` by the name in ``config._experts_implementation``. Importing this module
registers the names ``"kt_kernel"`` (method AMXINT4) and ``"kt_kernel:<METHOD>"`` for each method
of :data:`kt_kernel.METHODS`, so that

    model = AutoModelForCausalLM.from_pretrained(path, experts_implementation="kt_kernel:AMXINT8")

runs the routed experts of every MoE layer through a :class:`~kt_kernel.KTMoEWrapper` (each
layer quantizes its experts on its first forward, with default options). Routers, shared
experts, attention and everything else stay transformers' own code. The explicit way, which
checks the checkpoint first, quantizes every layer at once and takes GPU experts and threads:

    model = load_model(path, method="AMXINT4", num_gpu_experts=4, cpuinfer_threads=16)
    # or, on a model already loaded:  attach(model, method="AMXINT4", num_gpu_experts=4)

GPU experts: a per-layer mask (or count, the first N experts) keeps those experts in torch on
the model's device. Per layer and call: the CPU experts' share is submitted to kt_kernel
(``submit_forward``), the GPU experts run in torch meanwhile, then ``sync_forward`` waits, and the
two partial sums, each over a disjoint set of experts, are added once in fp32:

    out[t] = sum_{k: e_tk on CPU} w_tk expert_e(x_t)   (kt_kernel, bf16)
           + sum_{k: e_tk on GPU} w_tk expert_e(x_t)   (torch, model dtype, summed in fp32)

Expert ids from the routers are logical ids; the wrappers use the identity physical map.
"""
from __future__ import annotations

import itertools
import logging
from typing import Optional

import torch
import torch.nn.functional as F

import kt_kernel
from kt_kernel.models._deps import require_transformers

require_transformers()
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.integrations import moe  # noqa: E402

from kt_kernel.models.architectures import ARCHITECTURES  # noqa: E402
from kt_kernel.models.checkpoint import find_experts_modules, inspect_checkpoint  # noqa: E402
from kt_kernel.models.errors import UnsupportedModelError  # noqa: E402
from kt_kernel.checkpoint.ct_int4 import INT4_RELEASE_METHODS  # noqa: E402
from kt_kernel.formats import GGUF_METHOD  # noqa: E402
from kt_kernel.wrapper import KTMoEWrapper  # noqa: E402

__all__ = ["IMPLEMENTATION", "register", "implementation_name", "attach", "load_model", "load_reference",
           "load_gguf_model", "load_gguf_reference", "load_fp8_model", "load_fp8_reference", "load_mxfp4_model",
           "load_mxfp4_reference", "load_int4_model", "load_int4_reference", "load_hybrid_model",
           "KTExperts", "kt_layers", "kt_kernel_experts_forward"]

log = logging.getLogger("kt_kernel")

IMPLEMENTATION = "kt_kernel"
DEFAULT_METHOD = "AMXINT4"
FP8_METHOD = "FP8"
MXFP4_METHOD = "MXFP4"
# methods whose experts a wrapper reads from a file as they are stored (attach's weight_path)
_FROM_FILE = (GGUF_METHOD, FP8_METHOD, MXFP4_METHOD, *INT4_RELEASE_METHODS)
# every method an experts implementation name may carry
_ALL_METHODS = (*kt_kernel.METHODS, *INT4_RELEASE_METHODS, GGUF_METHOD)
_lazy_layers = itertools.count()


def implementation_name(method: str = DEFAULT_METHOD) -> str:
    """The experts_implementation name that selects ``method``."""
    if method not in _ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(_ALL_METHODS)}")
    return f"{IMPLEMENTATION}:{method}"


def _method_of(name: Optional[str]) -> str:
    if name == IMPLEMENTATION:
        return DEFAULT_METHOD
    if name and name.startswith(IMPLEMENTATION + ":"):
        return name.split(":", 1)[1]
    raise RuntimeError(f"experts_implementation {name!r} is not kt_kernel's")


class KTExperts:
    """The routed experts of one MoE layer, split between kt_kernel (CPU experts) and torch (GPU
    experts on the model's device). Lives on the transformers experts module as ``_kt``."""

    def __init__(self, module, layer_idx: int, method: str, gpu_mask: torch.Tensor, *,
                 cpuinfer_threads=None, threadpool_count: int = 1, chunked_prefill_size: int = 512,
                 max_deferred_experts_per_token: int = 0, release_weights: bool = True, weight_path=None,
                 gpu_weights=None):
        # gpt-oss: gate_up [E, H, 2I] with gate and up interleaved, down [E, I, H], biases, clamped SwiGLU
        self.gpt_oss = _check_layout(module, layer_idx)
        gate_up, down = module.gate_up_proj.detach(), module.down_proj.detach()
        E, two_i, H = (gate_up.shape[0], gate_up.shape[2], gate_up.shape[1]) if self.gpt_oss else gate_up.shape
        I = two_i // 2
        K = module.config.num_experts_per_tok
        gpu_mask = torch.as_tensor(gpu_mask, dtype=torch.bool).cpu().flatten()
        if gpu_mask.numel() != E:
            raise ValueError(f"layer {layer_idx}: the GPU-experts mask has {gpu_mask.numel()} entries, "
                             f"expected {E} (the layer's experts)")
        self.layer_idx, self.method = layer_idx, method
        self.num_experts, self.top_k, self.hidden_size, self.intermediate_size = E, K, H, I
        self.gpu_mask = gpu_mask
        self.num_gpu_experts = int(gpu_mask.sum())
        device, dtype = gate_up.device, gate_up.dtype
        from_file = weight_path is not None  # a converted folder, GGUF file or release: not the module's tensors
        if gate_up.is_meta:  # a model built from a GGUF file or FP8 release: its experts' tensors were never made
            if not from_file or (self.num_gpu_experts and gpu_weights is None):
                raise ValueError(f"layer {layer_idx}: the experts' tensors are on the meta device; methods "
                                 f"{' and '.join(_FROM_FILE)} with weight_path and gpu_weights run such a model "
                                 "(load_gguf_model, load_fp8_model)")
            device = torch.device("cpu")

        # stage 1: CPU experts into kt_kernel (the wrapper keeps only the experts not in the mask):
        # from the module's tensors, or for LLAMAFILE from the GGUF file weight_path
        if method == GGUF_METHOD and weight_path is None:
            raise ValueError(f"layer {layer_idx}: method {GGUF_METHOD} runs the experts of a GGUF file: give weight_path "
                             f"(attach(..., weight_path=...)); the methods that take the model's own weights: "
                             f"{', '.join(kt_kernel.METHODS)}")
        self.wrapper = None
        if self.num_gpu_experts < E:
            swiglu = (float(module.limit), float(module.alpha)) if self.gpt_oss else (0.0, 0.0)
            self.wrapper = KTMoEWrapper(layer_idx, E, K, H, I, gpu_experts_mask=gpu_mask, method=method,
                                        cpuinfer_threads=cpuinfer_threads, threadpool_count=threadpool_count,
                                        chunked_prefill_size=chunked_prefill_size, weight_path=weight_path,
                                        max_deferred_experts_per_token=max_deferred_experts_per_token,
                                        swiglu_limit=swiglu[0], swiglu_alpha=swiglu[1])
            if from_file:
                self.wrapper.load_weights()
            elif self.gpt_oss:
                gu, bias = gate_up.cpu(), module.gate_up_proj_bias.detach().cpu().float()
                self.wrapper.load_weights_from_tensors(
                    gu[:, :, 0::2].transpose(1, 2).contiguous(), gu[:, :, 1::2].transpose(1, 2).contiguous(),
                    down.cpu().transpose(1, 2).contiguous(), gate_bias=bias[:, 0::2].contiguous(),
                    up_bias=bias[:, 1::2].contiguous(), down_bias=module.down_proj_bias.detach().cpu().float())
            else:
                self.wrapper.load_weights_from_tensors(gate_up[:, :I].cpu().contiguous(),
                                                       gate_up[:, I:].cpu().contiguous(), down.cpu().contiguous())

        # stage 2: GPU experts as compact buffers on the model's device; slot[e] indexes them, -1 = CPU
        gpu_ids = torch.nonzero(gpu_mask).flatten()
        slot = torch.full((E,), -1, dtype=torch.int64)
        slot[gpu_ids] = torch.arange(gpu_ids.numel())
        module.register_buffer("kt_gpu_slot", slot.to(device), persistent=False)
        if gpu_weights is not None:
            gpu_gate_up, gpu_down = (t.to(device, dtype) for t in gpu_weights(layer_idx, gpu_ids))
        else:
            gpu_gate_up, gpu_down = gate_up[gpu_ids.to(device)].clone(), down[gpu_ids.to(device)].clone()
        module.register_buffer("kt_gpu_gate_up", gpu_gate_up, persistent=False)
        module.register_buffer("kt_gpu_down", gpu_down, persistent=False)
        if self.gpt_oss:  # the GPU experts' biases (the module's own: small, never on meta)
            ids = gpu_ids.to(module.gate_up_proj_bias.device)
            module.register_buffer("kt_gpu_gate_up_bias", module.gate_up_proj_bias.detach()[ids].to(device, dtype),
                                   persistent=False)
            module.register_buffer("kt_gpu_down_bias", module.down_proj_bias.detach()[ids].to(device, dtype),
                                   persistent=False)

        # stage 3: the fused tensors are no longer read; free them unless asked to keep them
        if release_weights:
            empty = torch.empty(0, dtype=dtype, device=device)
            module.gate_up_proj = torch.nn.Parameter(empty, requires_grad=False)
            module.down_proj = torch.nn.Parameter(empty.clone(), requires_grad=False)

    def describe(self) -> str:
        where = (f"{self.wrapper.isa_tier} {self.wrapper.kernel_name}" if self.wrapper is not None
                 else "no CPU experts")
        if self.wrapper is not None and self.wrapper.max_deferred_experts_per_token:
            where += f", {self.wrapper.max_deferred_experts_per_token} deferred per token"
        return (f"layer {self.layer_idx}: {self.num_experts - self.num_gpu_experts} CPU experts ({self.method}, "
                f"{where}), {self.num_gpu_experts} GPU experts (torch)")

    def forward(self, module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        M, H = hidden_states.shape
        if H != self.hidden_size or top_k_index.shape != (M, self.top_k) or top_k_weights.shape != (M, self.top_k):
            raise ValueError(f"layer {self.layer_idx}: experts called with hidden_states {tuple(hidden_states.shape)}, "
                             f"top_k_index {tuple(top_k_index.shape)}, top_k_weights {tuple(top_k_weights.shape)}; "
                             f"expected [M, {self.hidden_size}], [M, {self.top_k}], [M, {self.top_k}]")
        if M == 0:
            return hidden_states.new_zeros(0, H)
        x_cpu = None
        if self.wrapper is not None:  # 1. submit the CPU experts' share (inputs are copied at submit)
            x_cpu = hidden_states.detach().to("cpu").contiguous()
            self.wrapper.submit_forward(x_cpu, top_k_index.detach().to("cpu", torch.int64).contiguous(),
                                        top_k_weights.detach().to("cpu", torch.float32).contiguous())
        try:  # 2. the GPU experts in torch meanwhile
            out = self._torch_experts(module, hidden_states, top_k_index, top_k_weights)
        finally:  # 3. wait for the CPU share even if the torch part failed: no job left in flight
            cpu_out = self.wrapper.sync_forward(x_cpu) if self.wrapper is not None else None
        if cpu_out is not None:  # 4. the two shares cover disjoint experts: add once, in fp32
            out += cpu_out.to(out.device, torch.float32)
        return out.to(hidden_states.dtype)

    def _torch_experts(self, module, x, top_k_index, top_k_weights) -> torch.Tensor:
        """sum_{k: expert on GPU} w_tk down_e(act(gate_e x_t) * up_e x_t), fp32 [M, H], on x's device."""
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        if self.num_gpu_experts == 0:
            return out
        slot = module.kt_gpu_slot[top_k_index]                         # [M, K], -1 for CPU experts
        tok, k = torch.nonzero(slot >= 0, as_tuple=True)               # (token, top-k position) pairs
        if tok.numel() == 0:
            return out
        s = slot[tok, k]
        order = torch.argsort(s, stable=True)
        tok, k, s = tok[order], k[order], s[order]
        counts = torch.bincount(s, minlength=self.num_gpu_experts).tolist()
        start = 0
        for g, n in enumerate(counts):
            if n == 0:
                continue
            t, kk = tok[start:start + n], k[start:start + n]
            start += n
            if self.gpt_oss:  # transposed weights, biases, the module's own clamped SwiGLU
                h = module._apply_gate(x[t] @ module.kt_gpu_gate_up[g] + module.kt_gpu_gate_up_bias[g])
                y = h @ module.kt_gpu_down[g] + module.kt_gpu_down_bias[g]
            else:
                h = module._apply_gate(F.linear(x[t], module.kt_gpu_gate_up[g]))    # [n, I]
                y = F.linear(h, module.kt_gpu_down[g])                              # [n, H]
            out.index_add_(0, t, y.float() * top_k_weights[t, kk, None].float())
        return out


def _check_layout(module, layer_idx: int) -> bool:
    """kt_kernel computes silu(x gate^T) * (x up^T) then down, no bias, or gpt-oss's experts
    (biases, clamped SwiGLU; returns True): refuse anything else."""
    name = type(module).__name__
    model_type = getattr(module.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(f"layer {layer_idx}: model_type {model_type!r} is not a supported MoE "
                                    f"architecture; supported: {', '.join(ARCHITECTURES)}")
    if ARCHITECTURES[model_type].expert_layout == "gpt_oss":
        want = {"has_bias": True, "is_transposed": True, "is_concatenated": False}
        for flag, v in want.items():
            if getattr(module, flag, None) != v:
                raise UnsupportedModelError(f"layer {layer_idx}: {name} has {flag}={getattr(module, flag, None)}; "
                                            f"gpt-oss experts have {flag}={v}")
        return True
    flags = {"has_gate": True, "has_bias": False, "is_transposed": False, "is_concatenated": True,
             "has_post_expert_norm": False}
    for flag, want in flags.items():
        if getattr(module, flag, want) != want:
            raise UnsupportedModelError(f"layer {layer_idx}: {name} has {flag}={not want}; kt_kernel runs "
                                        f"experts with {', '.join(f'{k}={v}' for k, v in flags.items())}")
    if getattr(type(module), "_apply_gate", None) is not getattr(moe, "_default_apply_gate", None):
        raise UnsupportedModelError(f"layer {layer_idx}: {name} has its own gating (_apply_gate); kt_kernel "
                                    "computes act(gate) * up")
    act = getattr(module.config, "hidden_act", None)
    if act != "silu":
        raise UnsupportedModelError(f"layer {layer_idx}: config hidden_act={act!r}; kt_kernel's experts use silu")
    gate_up = getattr(module, "gate_up_proj", None)
    if not isinstance(gate_up, torch.Tensor) or gate_up.dim() != 3 or gate_up.shape[1] % 2:
        raise UnsupportedModelError(f"layer {layer_idx}: {name} has no fused gate_up_proj [E, 2I, H] tensor")
    return False


def kt_kernel_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """The experts forward transformers dispatches to for "kt_kernel" and "kt_kernel:<METHOD>"."""
    state = getattr(self, "_kt", None)
    if state is None:  # loaded by from_pretrained(..., experts_implementation="kt_kernel..."), not attached
        method = _method_of(self.config._experts_implementation)
        layer = next(_lazy_layers)  # the module does not know its decoder layer: number in order of use
        log.info("kt_kernel: quantizing the experts of MoE layer #%d to %s on first use "
                 "(attach() does all layers at once and takes options)", layer, method)
        state = self._kt = KTExperts(self, layer, method, torch.zeros(self.num_experts, dtype=torch.bool))
    return state.forward(self, hidden_states, top_k_index, top_k_weights)


def register() -> None:
    """Registers "kt_kernel" and "kt_kernel:<METHOD>" with transformers (idempotent; done when
    this module is imported)."""
    for name in [IMPLEMENTATION] + [implementation_name(m) for m in _ALL_METHODS]:
        moe.ExpertsInterface.register(name, kt_kernel_experts_forward)


register()


def _per_layer(value, layer: int, default):
    if isinstance(value, dict):
        return value.get(layer, default)
    return default if value is None else value


def attach(model, method: str = DEFAULT_METHOD, *, num_gpu_experts=0, gpu_experts_mask=None,
           cpuinfer_threads=None, threadpool_count: int = 1, chunked_prefill_size: int = 512,
           max_deferred_experts_per_token: int = 0, release_weights: bool = True, weight_path=None,
           gpu_weights=None) -> list:
    """Puts the routed experts of every MoE layer of ``model`` (a transformers model) on kt_kernel
    and switches its experts implementation to ``"kt_kernel:<method>"``. Returns the KTExperts
    of each layer.

    num_gpu_experts: int, or {layer index: int}: the first N experts of the layer stay in torch.
    gpu_experts_mask: bool [E], or {layer index: bool [E]}: the experts that stay in torch (given
    for a layer, it wins over num_gpu_experts). release_weights: drop the fused torch tensors once
    the experts are loaded (the module then runs only through kt_kernel).
    max_deferred_experts_per_token: d for every MoE layer whose next decoder layer is an MoE layer
    with CPU experts, 0 for the others (the last among them): see docs/design.md, "Deferred experts".
    weight_path: where the CPU experts are read from instead of the model's tensors: a folder
    written by convert_cpu_weights.py (its method), a release (FP8, MXFP4, RAWINT4, GPTQ_INT4), or
    for method LLAMAFILE the GGUF file (a shard of a split set, or their folder) whose
    ``blk.L.ffn_*_exps`` tensors hold them; the GPU experts stay the model's own,
    unless ``gpu_weights(layer, expert_ids) -> (gate_up [n, 2I, H], down [n, H, I])`` gives them
    (a model built on the meta device, whose fused expert tensors do not exist: load_gguf_model)."""
    impl = implementation_name(method)
    found = find_experts_modules(model)
    if not found:
        raise UnsupportedModelError(f"{type(model).__name__} has no routed-experts module (a transformers experts "
                                    "class with fused gate_up_proj/down_proj): not an MoE model kt_kernel can run")
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(f"model_type {model_type!r} is not a supported MoE architecture; supported: "
                                    f"{', '.join(ARCHITECTURES)}")
    moe_layers = [layer for layer, _, _ in found]
    d = max_deferred_experts_per_token
    top_k = min(m.config.num_experts_per_tok for _, _, m in found)
    if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < top_k:
        raise ValueError(f"max_deferred_experts_per_token={d!r} must be an integer in 0..num_experts_per_tok-1={top_k - 1}")
    for option, value in (("num_gpu_experts", num_gpu_experts), ("gpu_experts_mask", gpu_experts_mask)):
        unknown = sorted(set(value) - set(moe_layers)) if isinstance(value, dict) else []
        if unknown:
            raise ValueError(f"{option} names layer {unknown[0]}, which is not an MoE layer (MoE layers: {moe_layers})")
    # check everything before the first layer is converted (and its torch weights released)
    masks = []
    for layer, name, module in found:
        if getattr(module, "_kt", None) is not None:
            raise RuntimeError(f"{name} is already attached to kt_kernel ({module._kt.describe()})")
        _check_layout(module, layer)
        E = module.num_experts
        mask = _per_layer(gpu_experts_mask, layer, None)
        if mask is None:
            n = _per_layer(num_gpu_experts, layer, 0)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= E:
                raise ValueError(f"num_gpu_experts={n!r} for layer {layer} must be an integer in 0..{E}")
            mask = torch.arange(E) < n
        mask = torch.as_tensor(mask).to(torch.bool).cpu().flatten()
        if mask.numel() != E:
            raise ValueError(f"layer {layer}: the GPU-experts mask has {mask.numel()} entries, expected {E} "
                             "(the layer's experts)")
        masks.append(mask)
    # a layer's deferred experts are added by the next decoder layer's CPU experts: only layers
    # followed by an MoE layer with CPU experts defer (never the last one)
    on_cpu = {layer for (layer, _, _), mask in zip(found, masks) if not mask.all()}
    layers = []
    for (layer, _, module), mask in zip(found, masks):
        module._kt = KTExperts(module, layer, method, mask, cpuinfer_threads=cpuinfer_threads,
                               threadpool_count=threadpool_count, chunked_prefill_size=chunked_prefill_size,
                               max_deferred_experts_per_token=d if layer + 1 in on_cpu else 0,
                               release_weights=release_weights, weight_path=weight_path, gpu_weights=gpu_weights)
        layers.append(module._kt)
    model.set_experts_implementation(impl)
    bad = [(name, m.config._experts_implementation) for _, name, m in found
           if m.config._experts_implementation != impl]
    if bad:
        raise RuntimeError(f"transformers did not switch {bad[0][0]} to experts_implementation={impl!r} "
                           f"(it has {bad[0][1]!r})")
    return layers


def kt_layers(model) -> list:
    """The KTExperts of every attached MoE layer of ``model``."""
    return [m._kt for _, _, m in find_experts_modules(model) if getattr(m, "_kt", None) is not None]


def load_model(path, method: str = DEFAULT_METHOD, *, dtype=torch.bfloat16, device="cpu", **attach_options):
    """Checks the checkpoint in ``path`` (kt_kernel.models.inspect_checkpoint: clear errors for
    missing or mis-shaped tensors, non-MoE and unsupported models), loads it with transformers in
    ``dtype`` on the CPU, attaches kt_kernel to its experts (``attach_options`` as :func:`attach`)
    and only then moves the model to ``device``: the experts on kt_kernel never go there, the GPU
    experts and everything outside the experts do. Returns the model in eval mode."""
    inspect_checkpoint(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                 experts_implementation=implementation_name(method))
    attach(model.eval(), method, **attach_options)
    return model.to(device)


def load_hybrid_model(gpu_path, cpu_path, method: str = DEFAULT_METHOD, *, dtype=torch.bfloat16, device="cpu",
                      **attach_options):
    """A hybrid model whose two sides were quantized apart: ``gpu_path``, the compressed-tensors
    checkpoint convert_gpu_weights.py wrote (GPTQ W4A16 / W8A16 of attention, dense and shared
    MLPs and every routed expert), decompressed by compressed-tensors into transformers' model
    (kt_kernel.gpu_convert.load; the GPU experts, ``num_gpu_experts`` / ``gpu_experts_mask`` as
    :func:`attach`, run in torch from those weights); ``cpu_path``, the folder
    convert_cpu_weights.py wrote from the same model for ``method``, from which kt_kernel runs the
    other experts. Returns the model in eval mode on ``device`` (the CPU experts stay on the CPU)."""
    from kt_kernel.gpu_convert.load import decompressed_state_dict
    from kt_kernel.models.checkpoint import unquantized_config

    model = _model_on_meta(unquantized_config(gpu_path), lambda m: decompressed_state_dict(gpu_path, m, dtype), dtype,
                           implementation_name(method))
    _no_meta_left(model, gpu_path)
    attach(model, method, weight_path=str(cpu_path), **attach_options)
    return model.to(device)


def load_reference(path, *, dtype=torch.float32, device="cpu", gguf_experts=None, num_gpu_experts: int = 0):
    """The same checkpoint in transformers' eager experts, in fp32: the reference kt_kernel's runs
    are compared with. gguf_experts: a GGUF file (any shard of a set) holding the model's routed
    experts, whose gguf dequantization replaces every MoE layer's experts but the first
    num_gpu_experts (those a LLAMAFILE run keeps in torch with the model's own weights)."""
    inspect_checkpoint(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, experts_implementation="eager")
    if gguf_experts is not None:
        from kt_kernel.models.gguf_model import gguf_expert_weights

        for layer, _, module in find_experts_modules(model):
            gate_up, down = gguf_expert_weights(gguf_experts, layer, dtype=dtype)
            with torch.no_grad():
                module.gate_up_proj[num_gpu_experts:] = gate_up[num_gpu_experts:]
                module.down_proj[num_gpu_experts:] = down[num_gpu_experts:]
    return model.to(device).eval()


def _model_from_gguf(path, dtype, experts_implementation: str):
    """The transformers model of the whole GGUF model at ``path``: built on the meta device from the
    file's metadata, every tensor outside the routed experts dequantized from the file in
    ``dtype``; the routed experts' fused tensors stay on the meta device."""
    from kt_kernel.models.gguf_model import gguf_config, gguf_state_dict

    return _model_on_meta(gguf_config(path), lambda model: gguf_state_dict(path, model, dtype), dtype,
                          experts_implementation)


def _model_from_release(path, state_dict, dtype, experts_implementation: str):
    """The transformers model of the release at ``path`` (FP8, MXFP4, compressed-tensors int4):
    built on the meta device from its config.json without the quantization_config, every tensor
    outside the routed experts from ``state_dict(path, model, dtype)`` (its kt_kernel.models module);
    the routed experts' fused tensors stay on the meta device."""
    from kt_kernel.models.checkpoint import unquantized_config

    return _model_on_meta(unquantized_config(path), lambda model: state_dict(path, model, dtype), dtype,
                          experts_implementation)


def _model_on_meta(config, state_dict, dtype, experts_implementation: str):
    """transformers' model of ``config`` built on the meta device, ``state_dict(model)`` assigned
    (the routed experts' tensors left on meta), the buffers computed at construction rebuilt."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, experts_implementation=experts_implementation)
    model.load_state_dict(state_dict(model), strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    # buffers computed at construction (the rotary tables) were computed on meta: rebuild their modules
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent, _, child = name.rpartition(".")
            with torch.device("cpu"):
                setattr(model.get_submodule(parent), child, type(module)(module.config))
    return model.eval()


def _no_meta_left(model, path) -> None:
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{path}: after loading, {len(left)} tensor(s) of {type(model).__name__} were not read: "
                           f"{', '.join(left[:5])}")


def load_gguf_model(path, method: str = GGUF_METHOD, *, dtype=torch.bfloat16, device="cpu", **attach_options):
    """The whole model of a GGUF file (or split set, or folder; see kt_kernel.checkpoint.gguf), with
    its routed experts run from the file's blocks by kt_kernel (method LLAMAFILE) and everything
    else dequantized by gguf into transformers' model in ``dtype``; its configuration comes from
    the file's metadata. GPU experts (``num_gpu_experts`` / ``gpu_experts_mask``, as :func:`attach`)
    are dequantized onto ``device``; the CPU experts are never dequantized. Returns the model in
    eval mode."""
    if method != GGUF_METHOD:
        raise ValueError(f"method {method!r}: a GGUF model's experts run as they are stored, with method "
                         f"{GGUF_METHOD!r}; for {method} load the Hugging Face checkpoint (load_model)")
    from kt_kernel.models.gguf_model import gguf_expert_weights

    return _attached_from_file(_model_from_gguf(path, dtype, implementation_name(method)), path, method,
                               gguf_expert_weights, dtype, device, attach_options)


def load_fp8_model(path, method: str = FP8_METHOD, *, dtype=torch.bfloat16, device="cpu", **attach_options):
    """The whole model of an FP8 release (DeepSeek-V3 layout: e4m3 linear weights with
    ``weight_scale_inv`` blocks), with its routed experts run from the release's bytes by kt_kernel
    (method FP8) and everything else decoded into transformers' model in ``dtype``
    (kt_kernel.models.fp8_model; transformers' FP8 layers need a GPU). GPU experts
    (``num_gpu_experts`` / ``gpu_experts_mask``, as :func:`attach`) are decoded onto ``device``; the
    CPU experts are never decoded. Returns the model in eval mode."""
    if method != FP8_METHOD:
        raise ValueError(f"method {method!r}: an FP8 release's experts run as they are stored, with method "
                         f"{FP8_METHOD!r}; for {method}, load_model quantizes the decoded experts")
    from kt_kernel.models.fp8_model import fp8_expert_weights, fp8_state_dict

    return _attached_from_file(_model_from_release(path, fp8_state_dict, dtype, implementation_name(method)), path,
                               method, fp8_expert_weights, dtype, device, attach_options)


def load_fp8_reference(path, *, dtype=torch.float32, device="cpu"):
    """The whole FP8 release at ``path`` decoded (torch's float8_e4m3fn times the block scales),
    routed experts included, in transformers' eager experts and ``dtype``: the reference
    :func:`load_fp8_model` is compared with."""
    from kt_kernel.models.fp8_model import fp8_expert_weights, fp8_state_dict

    return _with_decoded_experts(_model_from_release(path, fp8_state_dict, dtype, "eager"), path, fp8_expert_weights,
                                 dtype, device)


def load_mxfp4_model(path, method: str = MXFP4_METHOD, *, dtype=torch.bfloat16, device="cpu", **attach_options):
    """The whole model of a gpt-oss MXFP4 release, with its routed experts run from the release's
    blocks by kt_kernel (method MXFP4: biases and clamped SwiGLU included) and everything else
    loaded into transformers' model in ``dtype``. GPU experts (``num_gpu_experts`` /
    ``gpu_experts_mask``, as :func:`attach`) are decoded onto ``device``; the CPU experts are never
    decoded. Returns the model in eval mode."""
    if method != MXFP4_METHOD:
        raise ValueError(f"method {method!r}: an MXFP4 release's experts run as they are stored, with method "
                         f"{MXFP4_METHOD!r}")
    from kt_kernel.models.mxfp4_model import mxfp4_expert_weights, mxfp4_state_dict

    return _attached_from_file(_model_from_release(path, mxfp4_state_dict, dtype, implementation_name(method)), path,
                               method,
                               mxfp4_expert_weights, dtype, device, attach_options)


def load_mxfp4_reference(path, *, dtype=torch.float32, device="cpu"):
    """The whole MXFP4 release at ``path`` with its routed experts decoded (e2m1 times 2^(s-127)),
    in transformers' eager experts and ``dtype``: the reference :func:`load_mxfp4_model` is compared with."""
    from kt_kernel.models.mxfp4_model import mxfp4_expert_weights, mxfp4_state_dict

    return _with_decoded_experts(_model_from_release(path, mxfp4_state_dict, dtype, "eager"), path,
                                 mxfp4_expert_weights, dtype, device)


def load_int4_model(path, method: str = INT4_RELEASE_METHODS[0], *, dtype=torch.bfloat16, device="cpu",
                    **attach_options):
    """The whole model of an int4 release (compressed-tensors, Kimi-K2-Thinking's scheme: pack-quantized
    routed experts, the rest unquantized; or AutoGPTQ: every linear layer packed but the routers),
    with its routed experts run from the release's packed words by kt_kernel (method RAWINT4 or
    GPTQ_INT4, the same path) and everything else loaded into transformers' model in ``dtype``
    (AutoGPTQ's other packed layers decoded). GPU experts (``num_gpu_experts`` / ``gpu_experts_mask``, as
    :func:`attach`) are decoded onto ``device``. Returns the model in eval mode."""
    if method not in INT4_RELEASE_METHODS:
        raise ValueError(f"method {method!r}: a compressed-tensors int4 release's experts run as they are stored, "
                         f"with method {' or '.join(INT4_RELEASE_METHODS)}")
    from kt_kernel.models.int4_model import int4_expert_weights, int4_state_dict

    return _attached_from_file(_model_from_release(path, int4_state_dict, dtype, implementation_name(method)), path,
                               method,
                               int4_expert_weights, dtype, device, attach_options)


def load_int4_reference(path, *, dtype=torch.float32, device="cpu"):
    """The whole int4 release at ``path`` with its routed experts decoded (scale * (q - zero point)),
    in transformers' eager experts and ``dtype``: the reference :func:`load_int4_model` is compared with."""
    from kt_kernel.models.int4_model import int4_expert_weights, int4_state_dict

    return _with_decoded_experts(_model_from_release(path, int4_state_dict, dtype, "eager"), path, int4_expert_weights,
                                 dtype, device)


def _attached_from_file(model, path, method: str, expert_weights, dtype, device, attach_options: dict):
    """``model`` (built on meta, its routed experts never made) attached to kt_kernel, whose
    wrappers read the CPU experts from ``path``; the GPU experts from ``expert_weights(path, layer,
    ids, dtype)``."""
    attach(model, method, weight_path=path, **attach_options,
           gpu_weights=lambda layer, ids: expert_weights(path, layer, ids.tolist(), dtype))
    _no_meta_left(model, path)
    return model.to(device)


def _with_decoded_experts(model, path, expert_weights, dtype, device):
    """``model`` (built on meta) with every routed expert from ``expert_weights(path, layer,
    dtype=dtype)``, in eval mode on ``device``."""
    for layer, _, module in find_experts_modules(model):
        gate_up, down = expert_weights(path, layer, dtype=dtype)
        module.gate_up_proj = torch.nn.Parameter(gate_up, requires_grad=False)
        module.down_proj = torch.nn.Parameter(down, requires_grad=False)
    _no_meta_left(model, path)
    return model.to(device).eval()


def load_gguf_reference(path, *, dtype=torch.float32, device="cpu"):
    """The whole GGUF model at ``path`` dequantized by gguf, routed experts included, in
    transformers' eager experts and ``dtype``: the reference :func:`load_gguf_model` is compared with."""
    from kt_kernel.models.gguf_model import gguf_expert_weights

    return _with_decoded_experts(_model_from_gguf(path, dtype, "eager"), path, gguf_expert_weights, dtype, device)
