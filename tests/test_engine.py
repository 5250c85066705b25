"""The engine behind KTMoEWrapper: asynchronous calls, error propagation, sharing, idle behaviour,
the ISA override and the staging buffers of captured batch sizes."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import kt_kernel
from kt_kernel import _ext

E, TOPK, H, I = 8, 4, 64, 48


@pytest.fixture(scope="module")
def shape(moe):
    return moe.Shape(E, TOPK, H, I)


def test_submit_copies_its_inputs(moe, shape):
    """Overwriting the input tensors right after submit_forward does not change the result. The
    call is queued behind a long call of another layer on the same engine, so it cannot have run
    before the overwrite."""
    kt_kernel.set_isa("generic")  # the slow scalar tier keeps the first call busy for a while
    big_shape = moe.Shape(8, 4, 256, 256)
    big = moe.layer("AMXINT8", big_shape)
    kt_kernel.set_isa(None)
    layer = moe.layer("AMXINT4", shape)
    x, ids, w = moe.inputs(shape, 64, seed=1)
    expected = layer.forward(x, ids, w)

    bx, bids, bw = moe.inputs(big_shape, 256, seed=2)
    big.submit_forward(bx, bids, bw)
    x2, ids2, w2 = x.clone(), ids.clone(), w.clone()
    layer.submit_forward(x2, ids2, w2)
    x2.normal_()
    ids2.copy_(ids2.flip(0))
    ids2[:, 0] = -1
    w2.fill_(7.0)
    out = layer.sync_forward()
    big.sync_forward()
    assert torch.equal(out, expected), "the result changed when the inputs were overwritten after submit"


def test_error_inside_a_job_reaches_python_and_engine_recovers(moe, shape):
    layer = moe.layer("AMXINT8", shape)
    other = moe.layer("BF16", shape)
    x, ids, w = moe.inputs(shape, 40, seed=3)
    bad = x.clone()
    bad[17, 3] = float("nan")
    # through submit/sync: the error surfaces at sync, and the layer can submit again
    layer.submit_forward(bad, ids, w)
    with pytest.raises(ValueError, match="hidden_states row 17"):
        layer.sync_forward()
    # the engine runs the next calls of this and other layers correctly
    moe.check(layer, shape, x, ids, w)
    moe.check(other, shape, x, ids, w)
    # a failing call queued between two good ones fails alone
    other.submit_forward(x, ids, w)
    layer.submit_forward(bad, ids, w)
    a = other.sync_forward()
    with pytest.raises(ValueError, match="hidden_states row 17"):
        layer.sync_forward()
    moe.check(other, shape, x, ids, w, out=a)


def test_wrappers_with_the_same_threads_share_one_engine(moe, shape):
    a = moe.layer("BF16", shape, cpuinfer_threads=2, threadpool_count=1, cache=False)
    b = moe.layer("AMXINT4", shape, cpuinfer_threads=2, threadpool_count=1, cache=False)
    c = moe.layer("BF16", shape, cpuinfer_threads=2, threadpool_count=2, cache=False)
    d = moe.layer("BF16", shape, cpuinfer_threads=1, threadpool_count=1, cache=False)
    assert a._engine is b._engine
    assert c._engine is not a._engine and d._engine is not a._engine
    assert (a._engine.threads, a._engine.subpools) == (2, 1)
    assert (c._engine.threads, c._engine.subpools) == (2, 2)
    assert [c._engine.threads_in(p) for p in range(2)] == [1, 1]


@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_two_layers_back_to_back(moe, shape, order):
    """Layer A and layer B submitted back to back on one engine, then synced, both correct."""
    a = moe.layer("AMXINT4", shape, threadpool_count=2)
    b_shape = moe.Shape(6, 2, 96, 80)
    b = moe.layer("AMXINT8", b_shape, threadpool_count=2)
    xa, ia, wa = moe.inputs(shape, 33, seed=4)
    xb, ib, wb = moe.inputs(b_shape, 65, seed=5)
    want_a, want_b = a.forward(xa, ia, wa), b.forward(xb, ib, wb)
    a.submit_forward(xa, ia, wa)
    b.submit_forward(xb, ib, wb)
    if order == "in_order":
        out_a, out_b = a.sync_forward(), b.sync_forward()
    else:
        out_b, out_a = b.sync_forward(), a.sync_forward()
    assert torch.equal(out_a, want_a) and torch.equal(out_b, want_b)
    moe.check(a, shape, xa, ia, wa, out=out_a)
    moe.check(b, b_shape, xb, ib, wb, out=out_b)


def test_idle_threads_sleep(moe, shape):
    """After a forward, the engine's threads stop spinning: over 0.5 s of idle time the process
    uses well under 0.5 s x threads of CPU."""
    threads = 2
    layer = moe.layer("BF16", shape, cpuinfer_threads=threads, threadpool_count=2)
    x, ids, w = moe.inputs(shape, 64, seed=6)
    layer.forward(x, ids, w)
    c0 = time.process_time()
    time.sleep(0.5)
    used = time.process_time() - c0
    assert used < 0.1 * 0.5 * threads, f"{used:.3f} s of CPU used by an idle process in 0.5 s"


# ---- ISA override -------------------------------------------------------------------------


def _run_python(code: str, tmp_path: pathlib.Path, **env_overrides) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter that imports the same kt_kernel as this one."""
    pkg_root = str(pathlib.Path(kt_kernel.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


PROBE = """
    import kt_kernel
    try:
        w = kt_kernel.KTMoEWrapper(0, 8, 2, 64, 32, cpuinfer_threads=1, method="AMXINT4")
        print("tier", kt_kernel.cpu_info()["active_tier"], w.isa_tier, w.kernel_name)
    except Exception as e:
        print("error", type(e).__name__, e)
"""


@pytest.mark.skipif("avx2" not in kt_kernel.cpu_info()["tiers"], reason="this CPU has no avx2 tier")
def test_env_override_selects_a_lower_tier(tmp_path):
    r = _run_python(PROBE, tmp_path, KT_KERNEL_ISA="avx2")
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert words[:3] == ["tier", "avx2", "avx2"], r.stdout
    assert words[3].endswith("__avx2"), r.stdout


def test_env_override_invalid_value_fails_at_construction(tmp_path):
    r = _run_python(PROBE, tmp_path, KT_KERNEL_ISA="sse9")
    assert r.returncode == 0, f"the process crashed: {r.stderr}"
    assert r.stdout.startswith("error ValueError"), r.stdout
    # names the setting, the bad value and the valid ones
    assert "KT_KERNEL_ISA" in r.stdout and "sse9" in r.stdout and all(t in r.stdout for t in _ext.all_tiers()), r.stdout


@pytest.mark.skipif("amx" in kt_kernel.cpu_info()["tiers"], reason="this CPU runs the top tier")
def test_env_override_above_the_cpu_fails_at_construction(tmp_path):
    r = _run_python(PROBE, tmp_path, KT_KERNEL_ISA="amx")
    assert r.returncode == 0, f"the process crashed: {r.stderr}"
    assert r.stdout.startswith("error RuntimeError") and "amx" in r.stdout and "KT_KERNEL_ISA" in r.stdout, r.stdout


def test_set_isa_then_clear(moe, shape):
    tiers = kt_kernel.cpu_info()["tiers"]
    kt_kernel.set_isa(tiers[0])
    assert kt_kernel.cpu_info()["override"] == tiers[0]
    low = moe.layer("BF16", shape, cache=False)
    kt_kernel.set_isa(None)
    assert kt_kernel.cpu_info()["active_tier"] == kt_kernel.cpu_info()["best_tier"]
    high = moe.layer("BF16", shape, cache=False)
    assert low.isa_tier == tiers[0] and high.isa_tier == tiers[-1]  # the tier stays with the layer


# ---- staging buffers ----------------------------------------------------------------------


@pytest.fixture
def capture():
    yield kt_kernel.KTMoEWrapper
    kt_kernel.KTMoEWrapper.set_capture_batch_sizes([])
    kt_kernel.KTMoEWrapper.clear_buffer_cache()


def test_capture_batch_sizes_roundtrip(capture):
    capture.set_capture_batch_sizes([64, 1, 4, 4])
    assert capture.get_capture_batch_sizes() == [1, 4, 64]
    with pytest.raises(ValueError, match="positive"):
        capture.set_capture_batch_sizes([4, 0])
    capture.set_capture_batch_sizes([])
    assert capture.get_capture_batch_sizes() == []


def test_captured_sizes_give_the_same_results(moe, shape, capture):
    """Calls whose batch size is captured reuse staging buffers between calls (and between
    layers of other sizes and dtypes): results stay exactly those of uncaptured calls."""
    a = moe.layer("AMXINT4", shape)
    b_shape = moe.Shape(6, 2, 200, 64)
    b = moe.layer("BF16", b_shape)
    inputs_a = {m: moe.inputs(shape, m, seed=m) for m in (1, 4, 64)}
    inputs_b = {m: moe.inputs(b_shape, m, seed=100 + m) for m in (1, 4, 64)}
    want_a = {m: a.forward(*inp) for m, inp in inputs_a.items()}
    want_b = {m: b.forward(*inp) for m, inp in inputs_b.items()}

    capture.set_capture_batch_sizes([1, 4, 64])
    for rnd in range(3):
        for m in (1, 4, 64):
            assert torch.equal(a.forward(*inputs_a[m]), want_a[m]), (rnd, m)
            xb, ib, wb = inputs_b[m]
            assert torch.equal(b.forward(xb.bfloat16().float(), ib, wb), b.forward(xb.bfloat16(), ib, wb))
            assert torch.equal(b.forward(*inputs_b[m]), want_b[m]), (rnd, m)
        # two calls of one captured size in flight at once
        a.submit_forward(*inputs_a[4])
        b.submit_forward(*inputs_b[4])
        assert torch.equal(a.sync_forward(), want_a[4]) and torch.equal(b.sync_forward(), want_b[4])
    capture.clear_buffer_cache()
    assert capture.get_capture_batch_sizes() == [1, 4, 64]
    for m in (1, 4, 64):
        assert torch.equal(a.forward(*inputs_a[m]), want_a[m])
    moe.check(a, shape, *inputs_a[64], out=want_a[64])


PIN_PROBE = """
    import os
    from kt_kernel import _ext
    allowed = sorted(os.sched_getaffinity(0))
    e = _ext.Engine.shared(len(allowed), 1)
    print("pinned", list(e.pinned_cpus) == allowed, "empty", list(e.pinned_cpus) == [])
    e = _ext.Engine.shared(len(allowed) + 1, 1)
    print("oversubscribed_unpinned", list(e.pinned_cpus) == [])
"""


def test_threads_pinned_one_per_allowed_cpu(tmp_path):
    """Threads take the allowed CPUs in order; more threads than CPUs are left unpinned."""
    r = _run_python(PIN_PROBE, tmp_path)
    assert "pinned True" in r.stdout and "oversubscribed_unpinned True" in r.stdout, r.stdout + r.stderr


def test_pinning_can_be_turned_off(tmp_path):
    r = _run_python(PIN_PROBE, tmp_path, KT_KERNEL_PIN_THREADS="0")
    assert "empty True" in r.stdout, r.stdout + r.stderr
