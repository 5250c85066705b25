"""SGLang's real MoE layer with KT enabled: tests/sglang/check_sglang_layer.py, run inside the
SGLang environment that tests/sglang/setup_env.sh builds (sglang 0.5.23 and the few packages its
imports need, beside this checkout's kt_kernel). Skipped only when that environment cannot be
built; the first build takes a few minutes, later runs reuse it (build/sglang-venv, or
KT_SGLANG_VENV)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "tests" / "sglang" / "setup_env.sh"
THIRD_PARTY_FAILED = 3  # setup_env.sh's status when the SGLang packages could not be installed


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_sglang_fused_moe_with_kt():
    setup = subprocess.run(["bash", str(SETUP)], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if setup.returncode == THIRD_PARTY_FAILED:
        pytest.skip(f"the SGLang environment could not be built (tests/sglang/setup_env.sh):\n{_tail(setup.stderr, 15)}")
    assert setup.returncode == 0, f"tests/sglang/setup_env.sh failed:\n{_tail(setup.stdout + setup.stderr)}"
    venv = Path(os.environ.get("KT_SGLANG_VENV", REPO / "build" / "sglang-venv"))
    run = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "tests/sglang/check_sglang_layer.py", "-q",
                          "-p", "no:cacheprovider", "-rxs"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    sys.stdout.write(_tail(run.stdout, 15))
    assert run.returncode == 0, f"SGLang layer checks failed:\n{_tail(run.stdout + run.stderr, 120)}"
