"""Shared parametrization, tolerances and MoE fixtures for the kt_kernel tests.

Parametrized once, here, from what the package reports:
  fmt      one dict per weight format of kt_kernel._ext.formats()        ids: bf16, int8_pc, ...
  method   the KTMoEWrapper method of each format                        ids: BF16, AMXINT8, ...
  tier     every ISA tier this CPU runs (cpu_info()["tiers"]), then the test-only "amx_emu" (the AMX
           tile kernels on the tile emulator) where the CPU can run it (cpu_info()["emulated_tiers"]);
           set with kt_kernel.set_isa for the test and cleared afterwards; a KTMoEWrapper fixes its
           tier when it is constructed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional

import importlib.util

import pytest
import torch

try:
    import kt_kernel
    from kt_kernel import _ext
    from kt_kernel.formats import GGUF_METHOD, all_formats, formats as method_formats
except ImportError as e:  # most often: the source tree shadows the installed package
    spec = importlib.util.find_spec("kt_kernel")
    raise ImportError(
        f"cannot import kt_kernel with its compiled extension ({e}); kt_kernel was found at "
        f"{spec.origin if spec else None}. Install the package and run `pytest` from the repository "
        "root, or `python -P -m pytest` (plain `python -m` puts the source tree, which has no _ext, "
        "first on sys.path).") from e

import reference
from format_expectations import ACT_ATOL, kernel_row  # noqa: F401  (kernel_row: used below)
from output_digests import OutputDigests

# The formats whose rows may hold any K (padded): those a method names and int4_g32_zp, which the
# int4 release readers choose (no method names it: the `method` fixture skips it); the GGUF block
# types, mxfp4 (method MXFP4) among them, hold whole blocks only: tests/test_gguf_*.py and
# tests/test_mxfp4.py.
FORMATS = [f for f in all_formats() if f["method"] != GGUF_METHOD and f["arrays"][0]["per"] != "block"]
FORMAT_BY_METHOD = {f["method"]: f for f in method_formats()}
FORMAT_BY_NAME = {f["name"]: f for f in all_formats()}
HOST_TIERS = list(kt_kernel.cpu_info()["tiers"])
EMULATED_TIERS = list(kt_kernel.cpu_info()["emulated_tiers"])  # ["amx_emu"] on AVX512-BF16 hosts
TEST_TIERS = HOST_TIERS + EMULATED_TIERS
ALL_TIERS = list(_ext.all_tiers())

# ---- tolerances ---------------------------------------------------------------------------
#
# Against the reference on the *dequantized* weights with the kernels' activation rounding
# emulated, an output element must satisfy
#     |out - ref| <= OUTPUT_RTOL * |ref| + dequant_atol * max|ref|
# OUTPUT_RTOL = 2^-8 is the bf16 rounding of the output (half an ulp of an 8-bit significand is
# at most 2^-8 of the value); dequant_atol absorbs fp32 summation order (~1e-7) and the rare
# activation whose rounding flips because the kernel's fp32 h differs from the reference's in the
# last bit, so it follows from the activation formats the format's kernels read (ACT_ATOL).
# Against the reference on the original fp32 weights: ||out - ref|| / ||ref|| <= fp32_rel, the
# format's layer_rel_err. weight_rel bounds the quantizer alone: the format's weight_rel_err,
# ||W x - deq(W) x|| / ||W x|| for Gaussian W [256, 2048]. Both bounds and the figures behind
# them are in the format records (cpp/src/formats/format_registry.cpp).
OUTPUT_RTOL = 2.0**-8



@dataclass(frozen=True)
class Tolerance:
    weight_rel: float
    dequant_atol: float
    fp32_rel: float


def _tolerance_of(f: dict) -> Tolerance:
    return Tolerance(weight_rel=f["weight_rel_err"], dequant_atol=max(ACT_ATOL[a] for a in f["acts"]),
                     fp32_rel=f["layer_rel_err"])


TOLERANCES = {f["name"]: _tolerance_of(f) for f in method_formats() + FORMATS}


def tolerance(fmt_name: str) -> Tolerance:
    assert fmt_name in TOLERANCES, f"format {fmt_name!r} is not in kt_kernel._ext.formats()"
    return TOLERANCES[fmt_name]


# ---- parametrization ----------------------------------------------------------------------


@pytest.fixture(params=FORMATS, ids=[f["name"] for f in FORMATS])
def fmt(request) -> dict:
    return request.param


METHODS = [f["method"] for f in FORMATS if f["method"]]


@pytest.fixture(params=METHODS, ids=METHODS)
def method(request) -> str:
    return request.param


@pytest.fixture(params=TEST_TIERS, ids=TEST_TIERS)
def tier(request):
    """Forces the ISA tier of the layers constructed during the test."""
    before = kt_kernel.cpu_info()["override"]  # KT_KERNEL_ISA, if the run was started with it
    kt_kernel.set_isa(request.param)
    try:
        yield request.param
    finally:
        kt_kernel.set_isa(before or None)


@pytest.fixture(params=[1, 2], ids=["tp1", "tp2"])
def threadpool_count(request) -> int:
    """Sub-pools of the engine (run with cpuinfer_threads=2): 2 splits I between them."""
    return request.param


@pytest.fixture(autouse=True)
def _no_isa_override_leaks():
    """Each test ends with the override the run started with (KT_KERNEL_ISA or none)."""
    before = kt_kernel.cpu_info()["override"]
    yield
    kt_kernel.set_isa(before or None)


def rounding_class(act: str) -> str:
    """q8u stores q + 128 of the same q as q8s: one rounding."""
    return "q8" if act in ("q8s", "q8u") else act


# ---- MoE fixtures -------------------------------------------------------------------------


def assert_close_dequant(out, ref, fmt_name: str, what: str = "", rtol: float = OUTPUT_RTOL) -> None:
    """Elementwise: |out - ref| <= rtol |ref| + dequant_atol max|ref| (exact when ref == 0).
    rtol: one bf16 rounding (OUTPUT_RTOL) against a reference; two when ref is itself a bf16 output."""
    tol = tolerance(fmt_name)
    out = out.double()
    ref = ref.double()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    bound = rtol * ref.abs() + tol.dequant_atol * scale
    err = (out - ref).abs()
    bad = err > bound
    if bad.any():
        t, h = (int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {out.numel()} outputs off the dequantized-weight reference; "
            f"first at [{t}, {h}]: got {out[t, h].item():.6g}, expected {ref[t, h].item():.6g} "
            f"(bound {bound[t, h].item():.3g}); worst excess {(err - bound).max().item():.3g}, "
            f"max|ref| = {scale:.4g}")


def assert_close_fp32(out, ref, fmt_name: str, what: str = "") -> None:
    tol = tolerance(fmt_name)
    den = ref.norm().item()
    num = (out.double() - ref).norm().item()
    if den == 0.0:
        assert num == 0.0, f"{what}: expected an all-zero output, got norm {num}"
        return
    assert num / den <= tol.fp32_rel, (
        f"{what}: relative error {num / den:.4f} against the fp32-weight reference exceeds {tol.fp32_rel} "
        f"({fmt_name})")


@dataclass(frozen=True)
class Shape:
    num_experts: int  # physical slots
    topk: int
    hidden: int
    intermediate: int
    logical_experts: Optional[int] = None  # experts in the weight tensors (default num_experts)

    @property
    def n_logical(self) -> int:
        return self.logical_experts or self.num_experts

    def __str__(self) -> str:
        return f"E{self.num_experts}k{self.topk}H{self.hidden}I{self.intermediate}"


class Moe:
    """Weights, layers and references shared by the MoE tests (cached: layers hold packed weights
    and are reused across the test parameters that only change the inputs)."""

    tiers = TEST_TIERS
    Shape = Shape
    OUTPUT_RTOL = OUTPUT_RTOL
    kernel_row = staticmethod(kernel_row)
    rounding_class = staticmethod(rounding_class)
    tolerance = staticmethod(tolerance)
    assert_close_dequant = staticmethod(assert_close_dequant)
    assert_close_fp32 = staticmethod(assert_close_fp32)

    @staticmethod
    def format_of(method: str) -> dict:
        return FORMAT_BY_METHOD[method]

    @staticmethod
    def check_release_layer(wrapper, gate, up, down, what: str, physical_to_logical_map=None) -> None:
        """A wrapper loaded from an int4 release (int4_g32_zp, 2 sub-pools) against the float64 layer
        on the release's weights (fp32 [E, N, K]) with the kernels' activation rounding, at M = 1 and
        300 (the tile kernels' sizes on amx and amx_emu)."""
        import reference

        assert wrapper.formats == ("int4_g32_zp", "int4_g32_zp")
        act = kernel_row("int4_g32_zp", wrapper.isa_tier)["act"]
        bounds = reference.slice_bounds(wrapper.moe_intermediate_size, 2, 32, 32)
        E, H = gate.shape[0], wrapper.hidden_size
        g = torch.Generator().manual_seed(1)
        for M in (1, 300):
            x = torch.randn(M, H, generator=g).bfloat16()
            ids = torch.stack([torch.randperm(E, generator=g)[:wrapper.num_experts_per_tok] for _ in range(M)])
            wts = torch.rand(M, wrapper.num_experts_per_tok, generator=g)
            ref = reference.moe_forward(x.float(), ids, wts, gate, up, down, act=act, slice_bounds=bounds,
                                        physical_to_logical_map=physical_to_logical_map)
            assert_close_dequant(wrapper.forward(x, ids, wts), ref, "int4_g32_zp", what=f"{what}, M={M}")

    def __init__(self):
        self._weights: dict = {}
        self._deq: dict = {}
        self._layers: dict = {}
        self._refs: dict = {}

    # weights ---------------------------------------------------------------------------
    def weights(self, shape: Shape, seed: int = 0):
        """fp32 gate, up [E_logical, I, H] and down [E_logical, H, I], scaled so that gate/up
        outputs and the layer output are O(1) for x ~ N(0, 1)."""
        key = (shape.n_logical, shape.hidden, shape.intermediate, seed)
        if key not in self._weights:
            g = torch.Generator().manual_seed(1000 + seed)
            E, H, I = key[:3]
            gate = torch.randn(E, I, H, generator=g) / math.sqrt(H)
            up = torch.randn(E, I, H, generator=g) / math.sqrt(H)
            down = torch.randn(E, H, I, generator=g) / math.sqrt(I)
            self._weights[key] = (gate, up, down)
        return self._weights[key]

    def dequantized(self, fmt_name: str, shape: Shape, seed: int = 0):
        """The weights as the layer holds them: the package's quantizer, the reference's
        dequantizer."""
        key = (fmt_name, shape.n_logical, shape.hidden, shape.intermediate, seed)
        if key not in self._deq:
            self._deq[key] = tuple(
                torch.stack([torch.from_numpy(reference.dequantize(_ext.quantize(fmt_name, t[e].numpy())))
                             for e in range(t.shape[0])])
                for t in self.weights(shape, seed))
        return self._deq[key]

    # layers ----------------------------------------------------------------------------
    def layer(self, method: str, shape: Shape, *, seed: int = 0, pmap=None, cache: bool = True,
              **kwargs) -> kt_kernel.KTMoEWrapper:
        """A loaded KTMoEWrapper at the ISA tier active now (see the `tier` fixture)."""
        kwargs.setdefault("cpuinfer_threads", 2)
        tier = kt_kernel.cpu_info()["active_tier"]
        key = (method, str(shape), shape.n_logical, seed, tier, None if pmap is None else tuple(pmap),
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())))
        if cache and key in self._layers:
            w = self._layers[key]
            w._pending = None  # a failed test may have left a call in flight
            return w
        w = kt_kernel.KTMoEWrapper(0, shape.num_experts, shape.topk, shape.hidden, shape.intermediate,
                                   method=method, **kwargs)
        w.load_weights_from_tensors(*self.weights(shape, seed), physical_to_logical_map=pmap)
        if cache:
            self._layers[key] = w
        return w

    # inputs ----------------------------------------------------------------------------
    @staticmethod
    def inputs(shape: Shape, M: int, seed: int = 0):
        """x ~ N(0, 1) [M, H]; distinct top-k slots per token (int64); weights in (0, 1]."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(M, shape.hidden, generator=g)
        ids = torch.rand(M, shape.num_experts, generator=g).topk(shape.topk, dim=1).indices
        w = torch.rand(M, shape.topk, generator=g) * 0.9 + 0.1
        return x, ids.contiguous(), w

    # references ------------------------------------------------------------------------
    def references(self, layer, shape: Shape, x, ids, w, *, seed: int = 0, pmap=None):
        """(reference on dequantized weights with the layer's activation rounding,
            reference on the fp32 weights), both float64 [M, H]."""
        f = FORMAT_BY_METHOD[layer.method]
        act = kernel_row(f["name"], layer.isa_tier)["act"]
        bounds = reference.slice_bounds(shape.intermediate, layer.threadpool_count, f["group"], f["k_align"])
        gpu = layer.gpu_experts_mask.tolist()
        x32, w32 = x.float(), w.float()
        # Every tier of a test case has the same references (the dequantized one per activation
        # format): computed once, keyed by everything they depend on, the inputs by content.
        digest = hashlib.sha1()
        for t in (x32, ids.long(), w32):
            digest.update(t.contiguous().numpy().tobytes())
        case = (str(shape), shape.n_logical, seed, None if pmap is None else tuple(pmap), tuple(gpu), digest.hexdigest())
        deq_key = ("deq", f["name"], act, tuple(bounds)) + case
        if deq_key not in self._refs:
            self._refs[deq_key] = reference.moe_forward(
                x32, ids, w32, *self.dequantized(f["name"], shape, seed), physical_to_logical_map=pmap,
                gpu_mask=gpu, act=act, slice_bounds=bounds)
        exact_key = ("exact",) + case
        if exact_key not in self._refs:
            self._refs[exact_key] = reference.moe_forward(x32, ids, w32, *self.weights(shape, seed),
                                                          physical_to_logical_map=pmap, gpu_mask=gpu)
        return self._refs[deq_key], self._refs[exact_key]

    def check(self, layer, shape: Shape, x, ids, w, out=None, *, seed: int = 0, pmap=None, fp32: bool = True):
        """Runs the layer (unless `out` is given) and compares with both references."""
        if out is None:
            out = layer.forward(x, ids, w)
        M = x.shape[0]
        assert out.dtype == torch.bfloat16 and tuple(out.shape) == (M, shape.hidden)
        deq, exact = self.references(layer, shape, x, ids, w, seed=seed, pmap=pmap)
        fmt_name = FORMAT_BY_METHOD[layer.method]["name"]
        assert_close_dequant(out, deq, fmt_name, what=f"{layer.method} on {layer.isa_tier}")
        if fp32:
            assert_close_fp32(out, exact, fmt_name, what=f"{layer.method} on {layer.isa_tier}")
        return out


@pytest.fixture(scope="session")
def moe() -> Moe:
    return Moe()


@pytest.fixture(scope="session")
def output_digests():
    """The matrix's bit-exact output digests (tests/output_digests.py)."""
    d = OutputDigests()
    yield d
    d.save()


@pytest.fixture
def tol(fmt) -> Tolerance:
    return tolerance(fmt["name"])


# ---- tiny HF models (tests of the transformers integration) -------------------------------


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """arch -> folder of its tiny model, built once per session (HF layout, seed 0)."""
    from kt_kernel.models import build_tiny_model  # needs transformers: only where used

    root = tmp_path_factory.mktemp("tiny_models")
    paths = {}

    def get(arch):
        if arch not in paths:
            paths[arch] = build_tiny_model(arch, root / arch, seed=0)
        return paths[arch]
    return get


@pytest.fixture(scope="session")
def tiny_256(tmp_path_factory):
    """arch -> the tiny model of ``arch`` (kt_kernel.models.build_tiny_model) whose expert
    intermediate size is whole K-quant super-blocks (256): the GGUF model tests' model."""
    from kt_kernel.models import ARCHITECTURES, build_tiny_model

    cache = {}

    def get(arch):
        if arch not in cache:
            field = ARCHITECTURES[arch].intermediate_field
            cache[arch] = build_tiny_model(arch, cache_dir=tmp_path_factory.mktemp(arch), **{field: 256})
        return cache[arch]
    return get
