"""The benchmark shapes of docs/benchmark_protocol.md, in one place.

Every benchmark script and suite takes its shapes and token counts from here, so that a figure
names the shape it was measured on and means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """One MoE layer: hidden size H, expert intermediate size I, E experts, top-K routing."""

    name: str
    H: int
    I: int
    E: int
    K: int
    like: str

    def weights_per_expert(self) -> int:
        """gate [I, H] + up [I, H] + down [H, I]."""
        return 3 * self.H * self.I

    def source_bytes(self, bytes_per_weight: float = 2.0) -> int:
        """Bytes of all E experts' weights at bytes_per_weight (2 for the bf16 source tensors)."""
        return int(self.E * self.weights_per_expert() * bytes_per_weight)


# The protocol's shapes (docs/benchmark_protocol.md, "Shapes").
SHAPES: dict[str, Shape] = {
    "A": Shape("A", H=2048, I=768, E=128, K=8, like="Qwen3-30B-A3B"),
    "B": Shape("B", H=7168, I=2048, E=64, K=8, like="DeepSeek-V3 / Kimi-K2 (64 of 256 experts)"),
    "C": Shape("C", H=4096, I=14336, E=8, K=2, like="Mixtral-8x7B"),
}

# Small shapes for quick suites and smoke tests; never used for reported figures.
# H and I are multiples of 32 (the int4_g32 group) and of 16 (a packed panel).
SMALL_SHAPES: dict[str, Shape] = {
    "S": Shape("S", H=512, I=256, E=16, K=4, like="small test layer"),
}

# Tokens per call M (docs/benchmark_protocol.md). Decode: M = 1 and 8; prefill: M = 512.
TOKENS: tuple[int, ...] = (1, 8, 64, 512)
# Added where memory and time allow (activations are small next to the weights at every shape
# above; the cost is time: about 4x the M = 512 run).
LARGE_TOKENS: tuple[int, ...] = (2048,)
DECODE_TOKENS: tuple[int, ...] = (1, 8)


def get_shape(name: str) -> Shape:
    """A shape by name, protocol shapes first, then the small ones."""
    if name in SHAPES:
        return SHAPES[name]
    if name in SMALL_SHAPES:
        return SMALL_SHAPES[name]
    known = ", ".join([*SHAPES, *SMALL_SHAPES])
    raise KeyError(f"unknown shape {name!r}; known shapes: {known}")
