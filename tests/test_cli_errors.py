"""Constructor arguments range- and type-checked in Python, and one-line errors (no traceback)
from the command-line tools for the mistakes a new user makes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kt_kernel
from kt_kernel.convert import convert_checkpoint
from test_convert import THREADS, build_checkpoint

E, TOPK, H, I = 8, 2, 64, 32
CLI = Path(__file__).resolve().parents[1] / "scripts" / "convert_cpu_weights.py"


def _make(**kw):
    args = dict(layer_idx=0, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=I,
                cpuinfer_threads=2, method="BF16")
    args.update(kw)
    return kt_kernel.KTMoEWrapper(**args)


INT_CASES = {
    # bools are ints to Python; True is not a count
    "cpuinfer_threads_true": ({"cpuinfer_threads": True}, TypeError, r"cpuinfer_threads=True must be an integer"),
    "layer_idx_true": ({"layer_idx": True}, TypeError, r"layer_idx=True must be an integer"),
    "num_gpu_experts_true": ({"num_gpu_experts": True}, TypeError, r"num_gpu_experts=True must be an integer"),
    "threadpool_count_true": ({"threadpool_count": True}, TypeError, r"threadpool_count=True must be an integer"),
    "layer_idx_float": ({"layer_idx": 1.0}, TypeError, r"layer_idx=1.0 must be an integer, got float"),
    # beyond C int: pybind's overflow error before
    "chunked_prefill_2_31": ({"chunked_prefill_size": 2 ** 31}, ValueError,
                             r"chunked_prefill_size=2147483648 is out of range: expected 1\.\.2147483647"),
    "hidden_size_2_40": ({"hidden_size": 2 ** 40}, ValueError, r"hidden_size=1099511627776 is out of range"),
    # 2**31 experts made per-expert lists of tens of GB before (killed for memory)
    "num_experts_above_limit": ({"num_experts": 2 ** 16 + 1}, ValueError,
                                r"num_experts=65537 is out of range: expected 1\.\.65536"),
    "cpuinfer_threads_above_limit": ({"cpuinfer_threads": 4097}, ValueError,
                                 r"cpuinfer_threads=4097 is out of range: expected 1\.\.4096"),
    "layer_idx_negative": ({"layer_idx": -1}, ValueError, r"layer_idx=-1 is out of range"),
}


@pytest.mark.parametrize("case", list(INT_CASES))
def test_int_arguments_checked(case):
    kw, exc, pattern = INT_CASES[case]
    with pytest.raises(exc, match=pattern):
        _make(**kw)


def _one_line_error(args, *needles):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("src") / "ckpt", h=H, i=I, e=E)


def test_convert_output_naming_a_file(src, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("mine")
    _one_line_error([str(CLI), "--input-path", str(src), "--output", str(f), "--no-progress"],
                    f"--output {f} is a file, not a folder")
    assert f.read_text() == "mine"


def test_convert_read_only_output(src, tmp_path):
    """The command line's own message for a write failure (injected: tests run as root)."""
    out = tmp_path / "out"
    script = ("import errno, sys\n"
              "from kt_kernel.checkpoint import safetensors_io as s\n"
              "def read_only(path, mode='r', *a, **kw):\n"
              "    if 'w' in mode: raise OSError(errno.EROFS, 'Read-only file system', str(path))\n"
              "    return open(path, mode, *a, **kw)\n"
              "s.open = read_only\n"
              "from kt_kernel.convert.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    err = _one_line_error(["-c", script, "--input-path", str(src), "--output", str(out), "--threads", str(THREADS),
                           "--no-progress"], f"cannot write the converted weights into {out}: Read-only file system")
    assert len(err.strip().splitlines()) == 1
    assert not list(out.glob("*.tmp"))


def test_doctor_config_missing(tmp_path):
    missing = tmp_path / "nope" / "config.json"
    _one_line_error(["-m", "kt_kernel.doctor", "--config", str(missing)],
                    f"--config {missing}: cannot read it: No such file or directory")


def test_doctor_config_not_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    _one_line_error(["-m", "kt_kernel.doctor", "--config", str(bad)], f"--config {bad}: not a usable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a torch without CUDA")
def test_demo_device_cuda_without_cuda():
    _one_line_error(["-m", "kt_kernel.demo", "--device", "cuda", "--no-reference"],
                    "--device cuda: this torch build sees no CUDA device", "use --device cpu")


def test_demo_model_of_a_converted_folder(src, tmp_path):
    out = tmp_path / "converted"
    convert_checkpoint(src, out, "int4", threads=THREADS, progress=False)
    _one_line_error(["-m", "kt_kernel.demo", "--model", str(out), "--no-reference"],
                    f"--model {out} is a folder converted by kt-convert-cpu-weights",
                    f"converted from {src}", "KTMoEWrapper(weight_path=...)")
