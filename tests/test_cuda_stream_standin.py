"""The CUDA stream path against the stand-in runtime (tests/cuda_standin), found through the same
lookup as a real libcudart (KT_KERNEL_CUDART). The stand-in's device memory is host memory it
reports as device memory, so these CPU-typed tensors take the stream path a GPU tensor takes:
stream-ordered D2H copies into pinned staging, host functions that start and await the job, the
H2D copy of the output, graph capture and replay. What differs from a GPU: the output tensor is a
host tensor (torch allocates it on hidden_states' device, here the CPU) and must be bfloat16, and
since the CPU allocator does not follow stream order, a test keeps each output alive until the
stream has copied into it."""
from __future__ import annotations

import os
import time

import pytest
import torch

import kt_kernel
from kt_kernel import _ext
from cuda_standin.standin import Standin, build

E, TOPK, H, I = 8, 3, 64, 48
SLEEP_MS = 300


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    lib = build(tmp_path_factory.mktemp("cudart_standin"))
    before = os.environ.get(_ext.CUDA_RUNTIME_ENV)
    os.environ[_ext.CUDA_RUNTIME_ENV] = str(lib)
    try:
        if _ext.cuda_runtime_path() != str(lib):
            pytest.skip(f"this process already uses the CUDA runtime {_ext.cuda_runtime_path()}")
        standin = Standin(lib)
        yield standin
        assert standin.violations() == 0, "a host function called the runtime, or a captured copy used pageable memory"
        standin.free_device()
    finally:
        if before is None:
            os.environ.pop(_ext.CUDA_RUNTIME_ENV)
        else:
            os.environ[_ext.CUDA_RUNTIME_ENV] = before
        kt_kernel.KTMoEWrapper.set_capture_batch_sizes([])


@pytest.fixture
def stream(rt):
    s = rt.stream()
    yield s
    rt.destroy_stream(s)


@pytest.fixture(scope="module")
def shape(moe):
    return moe.Shape(E, TOPK, H, I)


def _layers(moe, shape, n):
    return [moe.layer("BF16", shape, seed=i) for i in range(n)]


def _inputs(moe, shape, M, seed, ids_dtype=torch.int32, w_dtype=torch.float32):
    x, ids, w = moe.inputs(shape, M, seed=seed)
    return x.to(torch.bfloat16), ids.to(ids_dtype), w.to(w_dtype)


def _on_device(rt, *tensors):
    return [rt.device_tensor(t) for t in tensors]


def _cpu_result(layer, x, ids, w):
    return layer.forward(x, ids, w)


@pytest.mark.parametrize("ids_dtype, w_dtype", [(torch.int32, torch.float32), (torch.int64, torch.bfloat16)],
                         ids=["int32-f32", "int64-bf16"])
def test_equals_the_cpu_path(moe, shape, rt, stream, ids_dtype, w_dtype):
    layer = _layers(moe, shape, 1)[0]
    host = _inputs(moe, shape, 5, seed=1, ids_dtype=ids_dtype, w_dtype=w_dtype)
    out = layer.forward(*_on_device(rt, *host), cuda_stream=stream)
    rt.synchronize(stream)
    assert torch.equal(out, _cpu_result(layer, *host))
    moe.check(layer, shape, *host, out=out)


def test_default_stream_handle_zero(moe, shape, rt):
    layer = _layers(moe, shape, 1)[0]
    host = _inputs(moe, shape, 3, seed=2)
    out = layer.forward(*_on_device(rt, *host), cuda_stream=0)
    rt.synchronize(0)
    assert torch.equal(out, _cpu_result(layer, *host))


def test_cpu_tensors_with_a_stream_take_the_cpu_path(moe, shape, rt, stream):
    """With a runtime loaded, host tensors still run synchronously on the CPU path."""
    layer = _layers(moe, shape, 1)[0]
    host = _inputs(moe, shape, 4, seed=3)
    assert torch.equal(layer.forward(*host, cuda_stream=stream), _cpu_result(layer, *host))


def test_job_waits_for_earlier_work_and_later_work_sees_the_output(moe, shape, rt, stream):
    """A stand-in kernel that sleeps, then writes hidden_states, runs before the job reads it;
    submit and sync return while it sleeps; a copy enqueued after sync_forward gets the output."""
    layer = _layers(moe, shape, 1)[0]
    x_late, ids, w = _inputs(moe, shape, 6, seed=4)
    x_dev, ids_dev, w_dev = _on_device(rt, torch.zeros_like(x_late), ids, w)
    rt.sleep_then_copy(stream, SLEEP_MS, x_dev, x_late)
    t0 = time.monotonic()
    layer.submit_forward(x_dev, ids_dev, w_dev, cuda_stream=stream)
    out = layer.sync_forward(x_dev, cuda_stream=stream)
    returned_after = time.monotonic() - t0
    snapshot = torch.full_like(out, float("nan"))
    rt.copy_async(snapshot, out, stream)
    rt.synchronize(stream)
    assert returned_after < SLEEP_MS / 1000 / 2, f"submit + sync blocked for {returned_after:.3f} s"
    assert torch.equal(snapshot, _cpu_result(layer, x_late, ids, w))


def test_many_layers_in_flight(moe, shape, rt, stream):
    layers = _layers(moe, shape, 4)
    hosts = [_inputs(moe, shape, 7, seed=10 + i) for i in range(4)]
    devs = [_on_device(rt, *h) for h in hosts]
    for layer, d in zip(layers, devs):
        layer.submit_forward(*d, cuda_stream=stream)
    outs = [layer.sync_forward(d[0], cuda_stream=stream) for layer, d in zip(layers, devs)]
    # interleaved, as a model's layers call it: submit L+1 before sync L
    layers[0].submit_forward(*devs[0], cuda_stream=stream)
    interleaved = []
    for i in range(1, 4):
        layers[i].submit_forward(*devs[i], cuda_stream=stream)
        interleaved.append(layers[i - 1].sync_forward(cuda_stream=stream))
    interleaved.append(layers[3].sync_forward(cuda_stream=stream))
    rt.synchronize(stream)
    for layer, h, out, again in zip(layers, hosts, outs, interleaved):
        want = _cpu_result(layer, *h)
        assert torch.equal(out, want) and torch.equal(again, want)


def test_batches_larger_than_any_reserved_grow_the_staging(moe, shape, rt, stream):
    layer = _layers(moe, shape, 1)[0]
    for M in (3, 40, 130, 2):
        host = _inputs(moe, shape, M, seed=M)
        out = layer.forward(*_on_device(rt, *host), cuda_stream=stream)
        rt.synchronize(stream)
        assert torch.equal(out, _cpu_result(layer, *host)), f"M={M}"


def test_capture_then_replay_with_new_inputs(moe, shape, rt, stream):
    layers = _layers(moe, shape, 2)
    kt_kernel.KTMoEWrapper.set_capture_batch_sizes([2, 4])
    for M in (2, 4):
        static = [_on_device(rt, *_inputs(moe, shape, M, seed=20 + i)) for i in range(2)]
        allocs = rt.host_allocs()
        rt.begin_capture(stream)
        outs = []
        for layer, d in zip(layers, static):
            layer.submit_forward(*d, cuda_stream=stream)
            outs.append(layer.sync_forward(d[0], cuda_stream=stream))
        graph = rt.end_capture(stream)
        assert rt.host_allocs() == allocs, "capture allocated pinned memory"
        previous = None
        for step in range(3):
            fresh = [_inputs(moe, shape, M, seed=100 * M + 10 * step + i) for i in range(2)]
            for d, h in zip(static, fresh):
                for dst, src in zip(d, h):
                    dst.copy_(src)
            rt.launch(graph, stream)
            rt.synchronize(stream)
            got = [o.clone() for o in outs]
            for layer, h, o in zip(layers, fresh, got):
                assert torch.equal(o, _cpu_result(layer, *h)), f"M={M} replay {step}"
            assert previous is None or not torch.equal(got[0], previous[0]), "a replay gave the old output"
            previous = got


def test_capturing_a_batch_size_not_reserved_raises(moe, shape, rt, stream):
    layer = _layers(moe, shape, 1)[0]
    kt_kernel.KTMoEWrapper.set_capture_batch_sizes([2])
    d = _on_device(rt, *_inputs(moe, shape, 3, seed=5))
    rt.begin_capture(stream)
    try:
        with pytest.raises(RuntimeError, match=r"batch of 3 tokens.*set_capture_batch_sizes.*\[2\]"):
            layer.submit_forward(*d, cuda_stream=stream)
    finally:
        rt.end_capture(stream)
    assert layer._pending is None


@pytest.mark.parametrize("what", ["ids", "nan"])
def test_job_error_becomes_a_python_exception(moe, shape, rt, stream, what):
    """Out-of-range ids (rejected when the host function submits the job) or a NaN in
    hidden_states (raised inside the job): the output is NaN and the next call raises."""
    layer = _layers(moe, shape, 1)[0]
    x, ids, w = _inputs(moe, shape, 4, seed=6)
    if what == "ids":
        ids[2, 1] = E
        pattern = r"topk_ids\[2, 1\] = 8"
    else:
        x[3, 5] = float("nan")
        pattern = "hidden_states row 3"
    d = _on_device(rt, x, ids, w)
    layer.submit_forward(*d, cuda_stream=stream)
    out = layer.sync_forward(cuda_stream=stream)
    rt.synchronize(stream)
    assert out.isnan().all()
    with pytest.raises(ValueError, match=pattern):
        layer.submit_forward(*d, cuda_stream=stream)
    assert layer._pending is None
    good = _inputs(moe, shape, 4, seed=7)
    out = layer.forward(*_on_device(rt, *good), cuda_stream=stream)
    rt.synchronize(stream)
    assert torch.equal(out, _cpu_result(layer, *good))


def test_an_earlier_error_raised_by_sync_leaves_the_layer_usable(moe, shape, rt, stream):
    """Forward A fails while forward B is in flight: B's sync_forward raises A's error and still
    consumes B, so the next forward works."""
    layer = _layers(moe, shape, 1)[0]
    bad = _inputs(moe, shape, 3, seed=11)
    bad[1][0, 0] = -5
    scratch = torch.zeros(1)
    rt.sleep_then_copy(stream, 100, scratch, scratch)  # holds the stream until B is submitted
    out_a = layer.forward(*_on_device(rt, *bad), cuda_stream=stream)  # a host tensor: kept until the copy
    layer.submit_forward(*_on_device(rt, *_inputs(moe, shape, 3, seed=12)), cuda_stream=stream)
    rt.synchronize(stream)
    assert out_a.isnan().all()
    with pytest.raises(ValueError, match=r"topk_ids\[0, 0\] = -5"):
        layer.sync_forward(cuda_stream=stream)
    assert layer._pending is None
    good = _inputs(moe, shape, 3, seed=13)
    out = layer.forward(*_on_device(rt, *good), cuda_stream=stream)
    rt.synchronize(stream)
    assert torch.equal(out, _cpu_result(layer, *good))


def test_device_and_host_inputs_mixed(moe, shape, rt, stream):
    layer = _layers(moe, shape, 1)[0]
    x, ids, w = _inputs(moe, shape, 2, seed=8)
    x_dev, w_dev = _on_device(rt, x, w)
    with pytest.raises(ValueError, match="topk_ids not in the CUDA runtime's device memory"):
        layer.submit_forward(x_dev, ids, w_dev, cuda_stream=stream)
    assert layer._pending is None


def test_sync_on_another_stream_raises(moe, shape, rt, stream):
    layer = _layers(moe, shape, 1)[0]
    host = _inputs(moe, shape, 2, seed=9)
    d = _on_device(rt, *host)
    layer.submit_forward(*d, cuda_stream=stream)
    with pytest.raises(ValueError, match="sync_forward on stream"):
        layer.sync_forward(cuda_stream=0)
    out = layer.sync_forward(cuda_stream=stream)  # the forward is still there
    rt.synchronize(stream)
    assert torch.equal(out, _cpu_result(layer, *host))


@pytest.mark.parametrize("M", [1, 9])
def test_deferred_experts_in_stream_order(moe, shape, rt, stream, M):
    """Layers 70 (d = 1) and 71 (d = 0) on the stream, each submitted before the previous one is
    synced: layer 71's output carries layer 70's deferred slots exactly as on the CPU path
    (tests/test_deferred.py checks that path against a reference adding them one layer later),
    over two steps, so the pending part is taken and renewed in stream order."""
    def pair():
        made = []
        for idx, d in ((70, 1), (71, 0)):
            w = kt_kernel.KTMoEWrapper(idx, E, TOPK, H, I, method="BF16", cpuinfer_threads=2,
                                       max_deferred_experts_per_token=d)
            w.load_weights_from_tensors(*moe.weights(shape, idx))
            made.append(w)
        return made

    on_stream, on_cpu = pair(), pair()
    for step in range(2):
        hosts = [_inputs(moe, shape, M, seed=100 * step + i) for i in range(2)]
        devs = [_on_device(rt, *h) for h in hosts]
        on_stream[0].submit_forward(*devs[0], cuda_stream=stream)
        on_stream[1].submit_forward(*devs[1], cuda_stream=stream)
        outs = [on_stream[0].sync_forward(devs[0][0], cuda_stream=stream),
                on_stream[1].sync_forward(devs[1][0], cuda_stream=stream)]
        rt.synchronize(stream)
        wants = [w.forward(*h) for w, h in zip(on_cpu, hosts)]
        for i in range(2):
            assert torch.equal(outs[i], wants[i]), f"step {step}, layer {70 + i}"
