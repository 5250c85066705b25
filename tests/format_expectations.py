"""What the tests expect of every format record, in a module of its own so that test files import
it by name (two conftest.py files, tests/ and benchmarks/, make `from conftest import` ambiguous
when both folders run in one session)."""
from kt_kernel import _ext

# dequant_atol per activation format. f32: tiers differ by summation order only (~1e-7); bf16
# (avx512_bf16) rounds h to bf16, where a flip moves one h by 2^-8 of itself: one flip ~5e-4 of
# max|out|. q8s / q8u: one q8 flip of h moves the output by s_h |w_down| ~ (3/127)(1/sqrt(I)) ~ 1e-3
# of max|out|; 4e-3 allows a few flips landing on one element. q8_32 / q8_256 (GGUF kernels) scale per
# block, so a flip moves h by less: the same bound.
ACT_ATOL = {"f32": 1e-3, "bf16": 1e-3, "q8s": 4e-3, "q8u": 4e-3, "q8_32": 4e-3, "q8_256": 4e-3}


# Every record field the tests, the converter, the loaders, doctor and the benchmarks read.
RECORD_FIELDS = {"name": str, "method": str, "quant_method": str, "group": int, "k_align": int,
                 "block_bytes": int, "panel_tail_bytes": int, "bits_per_weight": float, "arrays": list,
                 "acts": list, "int_dot": bool, "weight_rel_err": float, "layer_rel_err": float,
                 "agreement": dict, "kernels": list}


_ALL_TIERS = list(_ext.all_tiers())


def kernel_row(fmt_name: str, tier_name: str) -> dict:
    """The kernel-table row that serves `fmt_name` on `tier_name`: the first (best-first table)
    whose tier is at or below it; for "amx_emu" the format's row of the emulated table, or where
    it has none the avx512_bf16 tier's."""
    if tier_name == "amx_emu":
        rows = [r for r in _ext.emulated_kernel_table() if r["format"] == fmt_name]
        if rows:
            return rows[0]
        tier_name = "avx512_bf16"
    rank = _ALL_TIERS.index(tier_name)
    for row in _ext.kernel_table():
        if row["format"] == fmt_name and _ALL_TIERS.index(row["tier"]) <= rank:
            return row
    raise AssertionError(f"kernel table has no row for {fmt_name} at or below {tier_name}")
