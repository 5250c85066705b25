"""SGLang's real MoE layer (tests/sglang/check_sglang_layer.py) and its Qwen3-MoE model
(check_sglang_model.py) with KT enabled, run inside the SGLang environment that
tests/sglang/setup_env.sh builds (sglang 0.5.23 and the few packages its imports need, beside this
checkout's kt_kernel). Skipped only when that environment cannot be
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


@pytest.fixture(scope="module")
def sglang_python() -> Path:
    setup = subprocess.run(["bash", str(SETUP)], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if setup.returncode == THIRD_PARTY_FAILED:
        pytest.skip(f"the SGLang environment could not be built (tests/sglang/setup_env.sh):\n{_tail(setup.stderr, 15)}")
    assert setup.returncode == 0, f"tests/sglang/setup_env.sh failed:\n{_tail(setup.stdout + setup.stderr)}"
    return Path(os.environ.get("KT_SGLANG_VENV", REPO / "build" / "sglang-venv")) / "bin" / "python"


def _run_checks(python: Path, check: str, what: str) -> None:
    run = subprocess.run([str(python), "-m", "pytest", f"tests/sglang/{check}", "-q", "-p", "no:cacheprovider", "-rxs"],
                         cwd=REPO, capture_output=True, text=True, timeout=1800)
    sys.stdout.write(_tail(run.stdout, 15))
    assert run.returncode == 0, f"{what} failed:\n{_tail(run.stdout + run.stderr, 120)}"


def test_sglang_fused_moe_with_kt(sglang_python):
    _run_checks(sglang_python, "check_sglang_layer.py", "SGLang layer checks")


def test_sglang_qwen3_moe_model_with_kt(sglang_python):
    """SGLang's own Qwen3-MoE model class, routed experts on kt_kernel, against transformers; in a
    process of its own (it initializes torch.distributed)."""
    _run_checks(sglang_python, "check_sglang_model.py", "SGLang model checks")
