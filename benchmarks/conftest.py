"""Command-line options of the pytest-benchmark suite (test_bench_moe.py): which protocol cases it
times. The defaults keep CI's `--benchmark-disable` smoke run to a few seconds.

    pytest benchmarks/test_bench_moe.py --bench-shapes A --bench-tokens 1,8,512
    pytest benchmarks/test_bench_moe.py --bench-shapes A,B,C --bench-isas avx2,avx512_bf16
"""
from __future__ import annotations

from pathlib import Path

import pytest

import kt_kernel
from kt_kernel.isa_option import resolve_isas
from shapes import get_shape

DEFAULT_SHAPES = "S"
DEFAULT_TOKENS = "1,8,64"


def pytest_addoption(parser):
    group = parser.getgroup("kt_kernel benchmark cases")
    group.addoption("--bench-shapes", default=DEFAULT_SHAPES,
                    help=f"comma-separated shapes of benchmarks/shapes.py (A, B, C; S small); default {DEFAULT_SHAPES}")
    group.addoption("--bench-tokens", default=DEFAULT_TOKENS,
                    help=f"comma-separated tokens per call M; default {DEFAULT_TOKENS}")
    group.addoption("--bench-isas", default="all",
                    help="ISA tiers, each forced for its cases: comma-separated, or all (every tier this CPU runs "
                         "but generic); default all")


def pytest_configure(config):
    """Parse the options once, into config.bench_*; a bad value stops the run with its message."""
    opt = config.option
    try:
        config.bench_shapes = [get_shape(s.strip()) for s in opt.bench_shapes.split(",") if s.strip()]
        config.bench_tokens = sorted({int(t) for t in opt.bench_tokens.split(",") if t.strip()})
        config.bench_isas = resolve_isas(opt.bench_isas)
    except (KeyError, ValueError) as e:
        raise pytest.UsageError(f"benchmark options: {e}") from e
    if not config.bench_shapes or not config.bench_tokens or min(config.bench_tokens) <= 0:
        raise pytest.UsageError(f"--bench-shapes {opt.bench_shapes!r} and --bench-tokens {opt.bench_tokens!r} must "
                                "name at least one shape and positive token counts")


def pytest_generate_tests(metafunc):
    """The protocol cases: shape, ISA tier and method per module-scoped fixture (one set of weights,
    one wrapper alive at a time), M per test."""
    cfg = metafunc.config
    names = metafunc.fixturenames
    if "shape" in names:
        metafunc.parametrize("shape", cfg.bench_shapes, ids=lambda s: s.name, scope="module")
    if "tier" in names:
        metafunc.parametrize("tier", cfg.bench_isas, scope="module")
    if "method" in names:
        metafunc.parametrize("method", kt_kernel.METHODS, scope="module")
    if "M" in names:
        metafunc.parametrize("M", cfg.bench_tokens, ids=lambda m: f"M{m}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """This folder's cases in bench_moe.py's order, shape by shape (PyTorch peer first), then tier,
    method and M: one shape's weights and one wrapper alive at a time. Its other tests follow; the
    items of other folders (this hook sees the whole session) keep their places."""
    rank = {"shape": [s.name for s in config.bench_shapes], "tier": config.bench_isas,
            "method": list(kt_kernel.METHODS)}

    def key(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "shape" not in params:
            return (float("inf"),)
        return (rank["shape"].index(params["shape"].name), *(rank[n].index(params[n]) if n in params else -1
                                                              for n in ("tier", "method")), params.get("M", 0))

    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    for i, item in zip(slots, sorted((items[i] for i in slots), key=key)):
        items[i] = item
