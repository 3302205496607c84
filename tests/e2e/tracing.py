"""``ovnk trace`` over a probe matrix: every probe's verdict and the NetworkPolicy rule (or namespace
default deny) that decided it, checked against what the scenario says.

The trace engine runs in-process on one NB/SB snapshot per matrix (the same code
``ovnk trace`` runs; tests/e2e/test_trace.py runs the command itself), with the
real ``ovn-trace`` per probe, so a whole matrix is traced in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ovnk.core.ovn.snapshot import ovn_trace
from ovnk.core.ovn.snapshot import read_tables
from ovnk.core.plugins import get_plugin_manager
from ovnk.core.trace import engine
from ovnk.core.trace.model import NB_COLUMNS
from ovnk.core.trace.model import SB_COLUMNS
from ovnk.core.trace.model import OvnState
from ovnk_lab import paths
from ovnk_lab.sandbox import Sandbox


@dataclass(frozen=True)
class Why:
    """The row a probe's verdict must come from: owner type, ``k8s.ovn.org/name`` and some of its keys."""

    owner_type: str
    owner: str
    keys: tuple[tuple[str, str], ...]

    def matches(self, decisive: Any) -> bool:
        return (decisive is not None and decisive.owner_type == self.owner_type and decisive.owner == self.owner
                and all(decisive.keys.get(k) == v for k, v in self.keys))

    def __str__(self) -> str:
        return f"{self.owner_type} {self.owner} {dict(self.keys)}"


def default_deny(namespace: str, direction: str) -> Why:
    return Why("NetpolNamespace", namespace, (("direction", direction), ("type", "defaultDeny")))


def policy_rule(namespace: str, name: str, direction: str, index: int, **keys: str) -> Why:
    extra = tuple((k.replace("_", "-"), v) for k, v in keys.items())
    return Why("NetworkPolicy", f"{namespace}:{name}", (("direction", direction), ("gress-index", str(index)), *extra))


class MatrixTracer:
    """Traces probes (source pod, destination pod, protocol, port) on one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.nb = sandbox.nb_address()
        self.sb = sandbox.sb_address()
        self.hook = get_plugin_manager().hook
        # The sandbox's own OVN release: ovn-trace must read the SB pipeline its northd wrote.
        self.ovn_trace = paths.ovn_install().bin("ovn-trace")

    def trace_all(self, probes: Iterable[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int], Any]:
        state = OvnState.from_rows(read_tables(remote=self.nb, schema="OVN_Northbound", tables=NB_COLUMNS),
                                   read_tables(remote=self.sb, schema="OVN_Southbound", tables=SB_COLUMNS))

        def run(datapath: str, flow: str) -> str:
            return ovn_trace(sb_remote=self.sb, datapath=datapath, microflow=flow,
                             ct_states=["new"] * engine.CT_STEPS, binary=self.ovn_trace)

        def one(probe: tuple[str, str, str, int]) -> Any:
            src, dst, protocol, port = probe
            return engine.trace(state, source=src, destination=dst, protocol=protocol, port=port, run=run,
                                hook=self.hook)

        items = list(probes)
        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip(items, pool.map(one, items), strict=True))


def check_traces(tracer: MatrixTracer, probes: dict[Any, tuple[str, str, str, int]],
                 expected: Callable[[Any], bool], why: Callable[[Any], Why | None]) -> None:
    """Each probe's trace verdict is ``expected`` and its decisive row is ``why`` (``None``: no policy row)."""
    results = tracer.trace_all(probes.values())
    wrong = []
    for probe, key in probes.items():
        result = results[key]
        allowed = result.verdict == engine.ALLOWED
        reason = why(probe)
        if allowed != expected(probe):
            wrong.append(f"  {probe}: expected {'allow' if expected(probe) else 'deny'}, trace says "
                         f"{result.verdict}: {result.reason}")
        elif reason is None and result.decisive is not None:
            wrong.append(f"  {probe}: expected no policy row, trace names {result.decisive.text}")
        elif reason is not None and not reason.matches(result.decisive):
            got = f"{result.decisive.owner_type} {result.decisive.owner} {dict(result.decisive.keys)}" \
                if result.decisive else "nothing"
            wrong.append(f"  {probe}: expected {reason}, trace names {got} ({result.reason})")
    assert not wrong, f"{len(wrong)} of {len(probes)} traces differ:\n" + "\n".join(wrong)
    print(f"{len(probes)} probes traced: verdicts and the rules behind them as expected")
