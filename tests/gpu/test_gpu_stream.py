"""The CUDA stream path on a real GPU, with the libcudart torch loaded. Skipped without CUDA.
Self-contained (no tests/conftest.py), so that a CUDA machine needs only torch and pytest:

    tests/gpu/run.sh      # builds the package, then: python3 -P -m pytest --noconftest tests/gpu
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from kt_kernel import KTMoEWrapper, _ext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

E, K, H, I = 16, 4, 256, 128
THREADS = min(8, len(os.sched_getaffinity(0)))
SLEEP_S = 0.3
_layers: dict = {}


def layer(seed: int = 0) -> KTMoEWrapper:
    if seed not in _layers:
        g = torch.Generator().manual_seed(seed)
        w = KTMoEWrapper(seed, E, K, H, I, method="BF16", cpuinfer_threads=THREADS)
        w.load_weights_from_tensors(torch.randn(E, I, H, generator=g) / H**0.5,
                                    torch.randn(E, I, H, generator=g) / H**0.5,
                                    torch.randn(E, H, I, generator=g) / I**0.5)
        _layers[seed] = w
    return _layers[seed]


def inputs(M: int, seed: int, dtype=torch.bfloat16, ids_dtype=torch.int32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).to(dtype)
    ids = torch.rand(M, E, generator=g).topk(K, dim=1).indices.to(ids_dtype).contiguous()
    w = torch.rand(M, K, generator=g) * 0.9 + 0.1
    return x, ids, w


def on_gpu(*tensors):
    return [t.cuda() for t in tensors]


def cpu_result(lay: KTMoEWrapper, x, ids, w) -> torch.Tensor:
    return lay.forward(x, ids, w)


def sleep_cycles(seconds: float) -> int:
    """torch.cuda._sleep cycles that keep the GPU busy for about `seconds`."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(50_000_000)
    end.record()
    end.synchronize()
    return int(50_000_000 * seconds * 1000 / start.elapsed_time(end))


def test_runtime_is_the_one_torch_loaded():
    lay = layer()
    out = lay.forward(*on_gpu(*inputs(2, 0)), cuda_stream=torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    path = _ext.cuda_runtime_path()
    print(f"runtime {path}; torch {torch.__version__} CUDA {torch.version.cuda}; {torch.cuda.get_device_name()}")
    assert path and "libcudart" in os.path.basename(path)
    assert out.is_cuda


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64], ids=["ids32", "ids64"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16], ids=["bf16", "f32", "f16"])
def test_equals_the_cpu_path(dtype, ids_dtype):
    lay = layer()
    host = inputs(7, 1, dtype, ids_dtype)
    out = lay.forward(*on_gpu(*host), cuda_stream=torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert out.is_cuda and out.dtype == dtype and tuple(out.shape) == (7, H)
    assert torch.equal(out.cpu(), cpu_result(lay, *host).to(dtype))


@pytest.mark.parametrize("kind", ["none", "stream_object", "side_stream_int", "default_0"])
def test_stream_kinds(kind):
    lay = layer()
    host = inputs(5, 2)
    dev = on_gpu(*host)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    stream = {"none": None, "stream_object": side, "side_stream_int": side.cuda_stream, "default_0": 0}[kind]
    out = lay.forward(*dev, cuda_stream=stream)
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), cpu_result(lay, *host))


def test_cpu_tensors_with_a_stream_take_the_cpu_path():
    lay = layer()
    host = inputs(4, 3)
    assert torch.equal(lay.forward(*host, cuda_stream=torch.cuda.Stream()), cpu_result(lay, *host))
    assert torch.equal(lay.forward(*host, cuda_stream=torch.cuda.current_stream().cuda_stream), cpu_result(lay, *host))


def test_ordering_and_no_blocking():
    """A GPU kernel that sleeps, then a copy that writes hidden_states, both before submit: the
    job reads the new values; submit and sync return while the GPU still sleeps; ids masked on
    the GPU right after submit (as SGLang does) do not reach the job; a clone enqueued after sync
    gets the output. A first forward on the stream and a first masking warm up what torch and
    CUDA set up once (their first launch of a kernel loads its module, which can block)."""
    lay = layer()
    x, ids, w = inputs(6, 4)
    cycles = sleep_cycles(SLEEP_S)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x_late, ids_d, w_d = on_gpu(x, ids, w)
        x_d = torch.zeros_like(x_late)
        lay.forward(x_d, ids_d.masked_fill(ids_d >= E // 2, -1), w_d, s.cuda_stream)
        s.synchronize()
        torch.cuda._sleep(cycles)
        x_d.copy_(x_late)
        t0 = time.monotonic()
        lay.submit_forward(x_d, ids_d, w_d, s.cuda_stream)
        t1 = time.monotonic()
        ids_d.masked_fill_(ids_d >= E // 2, -1)
        t2 = time.monotonic()
        out = lay.sync_forward(x_d, s.cuda_stream)
        t3 = time.monotonic()
        still_busy = not s.query()
        snapshot = out.clone()
    s.synchronize()
    print(f"submit {1e3 * (t1 - t0):.3f} ms, masking {1e3 * (t2 - t1):.3f} ms, sync {1e3 * (t3 - t2):.3f} ms, "
          f"GPU still busy after sync: {still_busy}")
    assert still_busy and (t1 - t0) + (t3 - t2) < SLEEP_S / 4, "submit or sync waited for the GPU"
    assert torch.equal(snapshot.cpu(), cpu_result(lay, x, ids, w))


def test_calls_cost_little_and_the_output_comes_soon():
    """Decode-sized calls: the calling thread's time in submit + sync, and the time the stream
    takes from before submit to after the output's copy (CPU job included), for one token."""
    lay = layer()
    d = on_gpu(*inputs(1, 9))
    stream = torch.cuda.current_stream()
    lay.forward(*d, cuda_stream=stream.cuda_stream)
    calls, spans = [], []
    for _ in range(50):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        lay.submit_forward(*d, stream.cuda_stream)
        lay.sync_forward(d[0], stream.cuda_stream)
        calls.append(time.perf_counter() - t0)
        end.record()
        end.synchronize()
        spans.append(start.elapsed_time(end))
    calls.sort()
    spans.sort()
    print(f"M=1: submit+sync median {1e6 * calls[25]:.0f} us on the calling thread; stream span median "
          f"{1e3 * spans[25]:.0f} us")
    assert calls[25] < 2e-3


def test_many_layers_in_flight():
    lays = [layer(i) for i in range(4)]
    hosts = [inputs(9, 10 + i) for i in range(4)]
    devs = [on_gpu(*h) for h in hosts]
    stream = torch.cuda.current_stream().cuda_stream
    for lay, d in zip(lays, devs):
        lay.submit_forward(*d, stream)
    outs = [lay.sync_forward(d[0], stream) for lay, d in zip(lays, devs)]
    lays[0].submit_forward(*devs[0], stream)
    interleaved = []
    for i in range(1, 4):
        lays[i].submit_forward(*devs[i], stream)
        interleaved.append(lays[i - 1].sync_forward(devs[i - 1][0], stream))
    interleaved.append(lays[3].sync_forward(devs[3][0], stream))
    torch.cuda.synchronize()
    for lay, h, out, again in zip(lays, hosts, outs, interleaved):
        want = cpu_result(lay, *h)
        assert torch.equal(out.cpu(), want) and torch.equal(again.cpu(), want)


def test_larger_batches_outside_capture():
    lay = layer()
    for M in (300, 1, 700):
        host = inputs(M, M)
        out = lay.forward(*on_gpu(*host), cuda_stream=torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        assert torch.equal(out.cpu(), cpu_result(lay, *host)), f"M={M}"


def test_graph_capture_and_replay_at_two_batch_sizes():
    lays = [layer(0), layer(1)]
    KTMoEWrapper.set_capture_batch_sizes([2, 8])
    try:
        for M in (2, 8):
            static = [on_gpu(*inputs(M, 50 + i)) for i in range(2)]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside capture, as torch advises
                for lay, d in zip(lays, static):
                    lay.forward(*d, torch.cuda.current_stream().cuda_stream)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                stream = torch.cuda.current_stream().cuda_stream
                outs = []
                for lay, d in zip(lays, static):
                    lay.submit_forward(*d, stream)
                    outs.append(lay.sync_forward(d[0], stream))
                total = outs[0].float() + outs[1].float()  # GPU work after sync sees the outputs
            previous = None
            for step in range(3):
                fresh = [inputs(M, 100 * M + 10 * step + i) for i in range(2)]
                for d, h in zip(static, fresh):
                    for dst, src in zip(d, h):
                        dst.copy_(src)
                graph.replay()
                torch.cuda.synchronize()
                got = [o.cpu() for o in outs]
                for lay, h, o in zip(lays, fresh, got):
                    assert torch.equal(o, cpu_result(lay, *h)), f"M={M} replay {step}"
                assert torch.equal(total.cpu(), got[0].float() + got[1].float())
                assert previous is None or not torch.equal(got[0], previous), "a replay gave the old output"
                previous = got[0]
    finally:
        KTMoEWrapper.set_capture_batch_sizes([])


def test_capturing_a_batch_size_not_reserved_raises():
    lay = layer()
    KTMoEWrapper.set_capture_batch_sizes([2])
    d = on_gpu(*inputs(3, 5))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with pytest.raises(RuntimeError, match=r"batch of 3 tokens.*set_capture_batch_sizes"):
            with torch.cuda.graph(graph):
                d[0].mul(2)  # a node, so the graph is not empty
                lay.submit_forward(*d, torch.cuda.current_stream().cuda_stream)
        assert lay._pending is None
    finally:
        KTMoEWrapper.set_capture_batch_sizes([])


def test_job_error_becomes_a_python_exception():
    lay = layer()
    x, ids, w = inputs(4, 6)
    x[3, 5] = float("nan")
    stream = torch.cuda.current_stream().cuda_stream
    out = lay.forward(*on_gpu(x, ids, w), cuda_stream=stream)
    torch.cuda.synchronize()
    assert out.isnan().all()
    good = on_gpu(*inputs(4, 7))
    with pytest.raises(ValueError, match="hidden_states row 3"):
        lay.submit_forward(*good, stream)
    assert lay._pending is None
    out = lay.forward(*good, cuda_stream=stream)
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), cpu_result(lay, *inputs(4, 7)))


def test_bad_inputs_name_the_argument():
    lay = layer()
    x, ids, w = inputs(4, 8)
    xd, idsd, wd = on_gpu(x, ids, w)
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError, match="topk_ids is on cpu but hidden_states is on cuda"):
        lay.submit_forward(xd, ids, wd, stream)
    with pytest.raises(ValueError, match="topk_weights is on cuda:0 but hidden_states is on cpu"):
        lay.submit_forward(x, ids, wd, stream)
    with pytest.raises(ValueError, match="hidden_states is not contiguous"):
        lay.submit_forward(xd.t().contiguous().t(), idsd, wd, stream)
    with pytest.raises(TypeError, match="cuda_stream"):
        lay.submit_forward(xd, idsd, wd, "0")
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="topk_ids is on cuda:1"):
            lay.submit_forward(xd, idsd.to("cuda:1"), wd, stream)
    assert lay._pending is None


def _deferring_pair():
    """Layers 20 (max_deferred_experts_per_token=1) and 21 (0) on the same weights as layer(0),
    layer(1)."""
    pair = []
    for idx, d in ((20, 1), (21, 0)):
        g = torch.Generator().manual_seed(idx - 20)
        w = KTMoEWrapper(idx, E, K, H, I, method="BF16", cpuinfer_threads=THREADS, max_deferred_experts_per_token=d)
        w.load_weights_from_tensors(torch.randn(E, I, H, generator=g) / H**0.5,
                                    torch.randn(E, I, H, generator=g) / H**0.5,
                                    torch.randn(E, H, I, generator=g) / I**0.5)
        pair.append(w)
    return pair


def test_deferred_experts_eager_and_captured():
    """Layer 21's output carries layer 20's deferred slots in stream order, as on the CPU path
    (checked there against a reference), eagerly and in a captured graph's replays."""
    on_stream, on_cpu = _deferring_pair(), _deferring_pair()

    def step(devs):
        stream = torch.cuda.current_stream().cuda_stream
        for lay, d in zip(on_stream, devs):
            lay.submit_forward(*d, stream)
        return [lay.sync_forward(d[0], stream) for lay, d in zip(on_stream, devs)]

    def expect(hosts):
        return [lay.forward(*h) for lay, h in zip(on_cpu, hosts)]

    for s in range(2):
        hosts = [inputs(5, 300 + 10 * s + i) for i in range(2)]
        outs = step([on_gpu(*h) for h in hosts])
        torch.cuda.synchronize()
        for i, (o, want) in enumerate(zip(outs, expect(hosts))):
            assert torch.equal(o.cpu(), want), f"eager step {s}, layer {20 + i}"

    KTMoEWrapper.set_capture_batch_sizes([4])
    try:
        static = [on_gpu(*inputs(4, 400 + i)) for i in range(2)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(static)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = step(static)
        for r in range(3):
            fresh = [inputs(4, 500 + 10 * r + i) for i in range(2)]
            for d, h in zip(static, fresh):
                for dst, src in zip(d, h):
                    dst.copy_(src)
            graph.replay()
            torch.cuda.synchronize()
            for i, (o, want) in enumerate(zip(outs, expect(fresh))):
                assert torch.equal(o.cpu(), want), f"replay {r}, layer {20 + i}"
    finally:
        KTMoEWrapper.set_capture_batch_sizes([])
