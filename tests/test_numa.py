"""NUMA placement (issue 22, first slice): the topology as the OS names it, numa_nodes in the
wrapper, sub-pools pinned to their node's allowed CPUs, and each sub-pool's share of the weights
bound to its node, verified page by page with move_pages. This machine may have one node, so the
multi-node cases run on a simulated topology (KT_KERNEL_NUMA_TOPOLOGY: this machine's CPUs
presented as nodes 0 and 2, non-contiguous ids; their memory is the real node 0), where the test
asserts that every page of every sub-pool's share is on the node the placement chose."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import reference
from kt_kernel import KTMoEWrapper
from kt_kernel.numa import SIMULATE_ENV, parse_cpulist, placement, topology

CPUS = sorted(os.sched_getaffinity(0))
E, K, H, I = 8, 2, 256, 96


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(E, I, H, generator=g) / H**0.5, torch.randn(E, I, H, generator=g) / H**0.5,
            torch.randn(E, H, I, generator=g) / I**0.5)


def _inputs(M, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, H, generator=g).bfloat16(), torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(M)]),
            torch.rand(M, K, generator=g))


def _wrapper(**kw):
    return KTMoEWrapper(layer_idx=0, num_experts=E, num_experts_per_tok=K, hidden_size=H, moe_intermediate_size=I,
                        cpuinfer_threads=kw.pop("cpuinfer_threads", len(CPUS)), method=kw.pop("method", "AMXINT8"), **kw)


def test_cpulist_parsing():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []


def test_topology_is_the_os_s():
    nodes = {n.id: n for n in topology()}
    sysfs = Path("/sys/devices/system/node")
    for d in sysfs.glob("node[0-9]*"):
        nid = int(d.name[4:])
        assert list(nodes[nid].cpus) == parse_cpulist((d / "cpulist").read_text())
        assert nodes[nid].mem_node == nid
    assert sorted(c for n in nodes.values() for c in n.allowed) == CPUS
    import kt_kernel
    assert [(n["id"], n["cpus"]) for n in kt_kernel.cpu_info()["numa_nodes"]] == [(i, n.cpus) for i, n in nodes.items()]


def test_real_node_binds_every_weight_page_there(moe):
    node = next(n for n in topology() if n.allowed)
    w = _wrapper(numa_nodes=[node.id], cpuinfer_threads=len(node.allowed))
    assert w._engine.placement == [(list(node.allowed), node.id)]
    w.load_weights_from_tensors(*_weights())
    pages = w._layer.weight_page_nodes(0)
    assert pages and set(pages) == {node.id}, sorted(set(pages))
    assert w.memory_nodes() == [{node.id: len(pages)}]


@pytest.fixture
def two_nodes(monkeypatch):
    """This machine's CPUs as two nodes with ids 0 and 2 (at least 2 CPUs)."""
    if len(CPUS) < 2:
        pytest.skip("needs 2 CPUs")
    half = len(CPUS) // 2
    spec = f"0={','.join(map(str, CPUS[:half]))};2={','.join(map(str, CPUS[half:]))}"
    monkeypatch.setenv(SIMULATE_ENV, spec)
    return CPUS[:half], CPUS[half:]


def test_simulated_nodes_place_each_subpool(moe, two_nodes):
    """numa_nodes=[2, 0]: sub-pool 0 on node 2's CPUs, sub-pool 1 on node 0's; every page of each
    share on its node's memory (the real node 0 for both); the output is the unbound
    threadpool_count=2 layer's bit for bit (the same split of I) and within AMXINT8's bound."""
    first, second = two_nodes
    real = next(n.mem_node for n in topology() if n.id == 0)
    w = _wrapper(numa_nodes=[2, 0], threadpool_count=2)
    assert w._engine.placement == [(second, real), (first, real)]
    assert w._engine.pinned_cpus == second + first
    plain = _wrapper(threadpool_count=2)
    for x in (w, plain):
        x.load_weights_from_tensors(*_weights())
    for pool in (0, 1):
        pages = w._layer.weight_page_nodes(pool)
        assert pages and set(pages) == {real}, (pool, sorted(set(pages)))
    gate, up, down = _weights()
    for M in (1, 40):
        x, ids, wts = _inputs(M)
        out = w.forward(x, ids, wts)
        assert torch.equal(out, plain.forward(x, ids, wts))
        moe.assert_close_fp32(out, reference.moe_forward(x.float(), ids, wts, gate, up, down), "int8_pc",
                              f"numa_nodes=[2, 0], M={M}")


def test_bad_numa_nodes_are_refused_by_name(two_nodes, monkeypatch):
    with pytest.raises(ValueError, match=r"numa_nodes names node 1, which this machine does not have; its nodes: \[0, 2\]"):
        _wrapper(numa_nodes=[0, 1], threadpool_count=2)
    with pytest.raises(ValueError, match=r"numa_nodes=\[0\] must list 2 node ids .*threadpool_count=2"):
        _wrapper(numa_nodes=[0], threadpool_count=2)
    outside = max(CPUS) + 1
    monkeypatch.setenv(SIMULATE_ENV, f"0={CPUS[0]};3={outside}")
    with pytest.raises(ValueError, match=rf"node 3, whose CPUs \[{outside}\] are all outside this process's cpuset"):
        placement([0, 3], 2)
    monkeypatch.setenv(SIMULATE_ENV, "0:0")
    with pytest.raises(ValueError, match="each item is NODE=CPULIST"):
        topology()


# ---- the MoE matrix on simulated topologies ------------------------------------------------------

# the test matrix's shape (tests/test_moe_matrix.py): I = 80 splits unevenly, in 16s and 32s
MATRIX = (8, 3, 96, 80)
TOPOLOGIES = {"2nodes-0-2": ("0={a};2={b}", [2, 0]), "4nodes": ("0={a};1={b};2={a};3={b}", [0, 1, 2, 3])}


@pytest.mark.parametrize("topo", list(TOPOLOGIES))
def test_matrix_on_simulated_nodes_is_the_unbound_layer(moe, method, tier, topo, monkeypatch):
    """Every method on every tier, decode and prefill, with maps and GPU experts: the layer placed
    on 2 (ids 0 and 2) or 4 simulated nodes (2 CPUs each serving two) gives the unbound layer of as
    many sub-pools bit for bit, which test_moe_matrix checks against the references; and each
    sub-pool's pages are on the memory node the placement chose for it."""
    if len(CPUS) < 2:
        pytest.skip("needs 2 CPUs")
    spec, ids = TOPOLOGIES[topo]
    monkeypatch.setenv(SIMULATE_ENV, spec.format(a=CPUS[0], b=CPUS[1]))
    plan = placement(ids, len(ids))
    shape = moe.Shape(*MATRIX)
    kw = dict(threadpool_count=len(ids), cpuinfer_threads=len(ids), pmap=(5, 2, 7, 2, 0, 6, 1, 3), num_gpu_experts=2)
    placed = moe.layer(method, shape, numa_nodes=ids, cache=False, **kw)
    plain = moe.layer(method, shape, cache=False, **kw)
    assert placed._engine.placement == [tuple(p) for p in plan]
    for pool, (_, node) in enumerate(plan):
        pages = placed._layer.weight_page_nodes(pool)
        assert not pages or set(pages) == {node}, (pool, sorted(set(pages)))
    for M in (1, 64, 513):
        x, ids_, w = moe.inputs(shape, M, seed=M)
        assert torch.equal(placed.forward(x, ids_, w), plain.forward(x, ids_, w)), M
