"""NUMA topology as the OS gives it, and where a wrapper's sub-pools run.

``topology()`` reads ``/sys/devices/system/node``: each node's id as the OS names it (ids need not
be 0..n-1: a machine may have nodes 0 and 2), its CPUs, and those of them this process may use
(its cpuset, ``sched_getaffinity``). ``KTMoEWrapper(numa_nodes=[ids], threadpool_count=len(ids))``
puts sub-pool p's threads on node ``ids[p]``'s allowed CPUs and its share of every expert's
weights in that node's memory (kt/numa.h); the weight files stay NUMA-independent.

KT_KERNEL_NUMA_TOPOLOGY simulates a topology, for testing the placement on a one-node machine:
``"0=0;2=1"`` presents node 0 with CPU 0 and node 2 with CPU 1 (ids and CPU lists as the OS
writes them). The simulated nodes' memory is the real node that holds their first CPU, so the
binding can be checked page by page there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Node", "topology", "placement", "parse_cpulist", "SIMULATE_ENV"]

SIMULATE_ENV = "KT_KERNEL_NUMA_TOPOLOGY"
_SYS_NODES = Path("/sys/devices/system/node")


@dataclass(frozen=True)
class Node:
    id: int              # as the OS names it
    cpus: tuple          # every CPU of the node
    allowed: tuple       # those this process may run on
    mem_node: int        # the node whose memory holds its weights (itself, unless simulated)


def parse_cpulist(text: str) -> list:
    """The CPUs of a kernel cpulist string: "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _real_nodes() -> dict:
    """node id -> its CPUs, from sysfs; a machine without it is one node 0 with every CPU."""
    nodes = {}
    for d in sorted(_SYS_NODES.glob("node[0-9]*")):
        cpulist = d / "cpulist"
        if cpulist.exists():
            nodes[int(d.name[4:])] = parse_cpulist(cpulist.read_text())
    return nodes or {0: sorted(os.sched_getaffinity(0))}


def topology() -> list:
    """The nodes, in id order (simulated where KT_KERNEL_NUMA_TOPOLOGY is set)."""
    allowed = os.sched_getaffinity(0)
    real = _real_nodes()
    spec = os.environ.get(SIMULATE_ENV)
    if not spec:
        return [Node(i, tuple(c), tuple(x for x in c if x in allowed), i) for i, c in sorted(real.items())]
    home = {cpu: i for i, cpus in real.items() for cpu in cpus}
    nodes = []
    for item in spec.split(";"):
        node, sep, cpulist = item.partition("=")
        try:
            cpus = parse_cpulist(cpulist)
            nid = int(node)
        except ValueError:
            cpus, sep = [], ""
        if not sep or not cpus:
            raise ValueError(f"{SIMULATE_ENV}={spec!r}: each item is NODE=CPULIST (e.g. 0=0-3;2=4-7), not {item!r}")
        nodes.append(Node(nid, tuple(cpus), tuple(c for c in cpus if c in allowed), home.get(cpus[0], 0)))
    return sorted(nodes, key=lambda n: n.id)


def placement(numa_nodes, threadpool_count: int) -> list:
    """Engine placement of ``numa_nodes`` (one node id per sub-pool): [(allowed CPUs, memory node)].
    Raises ValueError naming the node ids that exist, for an id that does not or one with no CPU
    this process may use."""
    ids = list(numa_nodes)
    if len(ids) != threadpool_count or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"numa_nodes={numa_nodes!r} must list {threadpool_count} node ids (one per sub-pool, "
                         f"threadpool_count={threadpool_count}), e.g. {list(range(threadpool_count))}")
    nodes = {n.id: n for n in topology()}
    out = []
    for i in ids:
        n = nodes.get(i)
        if n is None:
            raise ValueError(f"numa_nodes names node {i}, which this machine does not have; its nodes: "
                             f"{sorted(nodes)}")
        if not n.allowed:
            raise ValueError(f"numa_nodes names node {i}, whose CPUs {list(n.cpus)} are all outside this process's "
                             f"cpuset {sorted(os.sched_getaffinity(0))}")
        out.append((list(n.allowed), n.mem_node))
    return out
