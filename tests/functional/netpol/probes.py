"""Probe matrices: every pod to every pod on each port, expected allow/deny against what a prober sees.

A :class:`Prober` answers "does a new connection from ``src`` to ``dst`` on
``protocol``/``port`` get through?". :class:`TraceProber` asks ``ovn-trace``
(logical flows only, new connections: ``--ct new`` for every conntrack
step); a prober that sends real packets in the sandbox can run the same
matrices later.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import PodInfo

CT_STEPS = 6  # more than any path here takes (source switch, destination switch, after-LB)


@dataclass(frozen=True)
class Probe:
    src: str  # pod label "ns/name"
    dst: str
    protocol: str  # tcp or udp
    port: int

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} {self.protocol}/{self.port}"


class Prober(Protocol):
    def reachable(self, probe: Probe) -> bool: ...


class TraceProber:
    """``ovn-trace`` from the source pod's switch; allowed when the packet is output to the destination LSP."""

    def __init__(self, cluster: NetpolCluster, pods: Mapping[str, PodInfo]) -> None:
        self.cluster = cluster
        self.pods = dict(pods)
        self._router_macs: dict[str, str] = {}
        self.last_output: dict[Probe, str] = {}

    def _router_mac(self, node: str) -> str:
        if node not in self._router_macs:
            self._router_macs[node] = self.cluster.rtos_mac(node)
        return self._router_macs[node]

    def microflow(self, probe: Probe) -> str:
        src, dst = self.pods[probe.src], self.pods[probe.dst]
        eth_dst = dst.mac if src.node == dst.node else self._router_mac(src.node)
        return (f'inport == "{src.lsp}" && eth.src == {src.mac} && eth.dst == {eth_dst} && '
                f"ip4.src == {src.ip} && ip4.dst == {dst.ip} && ip.ttl == 64 && "
                f"{probe.protocol} && {probe.protocol}.src == 33333 && {probe.protocol}.dst == {probe.port}")

    def reachable(self, probe: Probe) -> bool:
        src, dst = self.pods[probe.src], self.pods[probe.dst]
        output = self.cluster.central.trace(src.node, self.microflow(probe), *(["--ct=new"] * CT_STEPS))
        self.last_output[probe] = output
        return f'output to "{dst.lsp}"' in output


def probes(pods: Iterable[str], ports: Iterable[tuple[str, int]]) -> list[Probe]:
    """Every ordered pair of distinct pods on every port."""
    names = list(pods)
    return [Probe(src, dst, protocol, port) for src in names for dst in names if src != dst
            for protocol, port in ports]


def run_matrix(prober: Prober, matrix: Iterable[Probe], *, workers: int = 4) -> dict[Probe, bool]:
    items = list(matrix)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(prober.reachable, items))
    return dict(zip(items, results, strict=True))


def assert_matrix(prober: Prober, matrix: Iterable[Probe], expected: Callable[[Probe], bool]) -> None:
    """Run every probe and fail with the full list of mismatches (not just the first)."""
    actual = run_matrix(prober, matrix)
    wrong = [f"  {p}: expected {'allow' if expected(p) else 'deny'}, got {'allow' if ok else 'deny'}"
             for p, ok in actual.items() if ok != expected(p)]
    assert not wrong, f"{len(wrong)} of {len(actual)} probes differ:\n" + "\n".join(wrong)
