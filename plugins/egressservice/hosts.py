"""Which node hosts an EgressService (pure).

A node qualifies when it is Ready, answers its health check, matches the
object's ``nodeSelector`` and, for ``externalTrafficPolicy: Local``, runs one
of the Service's endpoints. The current host keeps the service while it
qualifies (moving it breaks every connection going out through it); otherwise
the qualifying node hosting the fewest services takes it (ties: by name), as
upstream balances them.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass

from ovnk.plugins.egressservice.models import EgressServiceModel
from ovnk.plugins.egressservice.models import Endpoint
from ovnk.plugins.egressservice.models import HostCandidate


@dataclass(frozen=True)
class HostChoice:
    """The chosen node (``None``: no node qualifies) and, when none does, why."""

    host: str | None
    reason: str = ""


def why_not(model: EgressServiceModel, node: HostCandidate, endpoint_nodes: set[str]) -> str:
    """Why ``node`` cannot host ``model`` ("" when it can)."""
    if not node.ready:
        return "not Ready"
    if not node.reachable:
        return "does not answer its health check"
    if not model.node_selector.matches(node.labels):
        return "does not match spec.nodeSelector"
    if model.local_only and node.name not in endpoint_nodes:
        return "has no local endpoint (externalTrafficPolicy: Local)"
    return ""


def choose_host(model: EgressServiceModel, nodes: Iterable[HostCandidate], endpoints: Iterable[Endpoint], *,
                hosted: Mapping[str, int]) -> HostChoice:
    """The host of ``model``.

    :param hosted: how many other services each node hosts now.
    """
    endpoint_nodes = {e.node for e in endpoints if e.node}
    refusals: dict[str, list[str]] = {}
    eligible: list[str] = []
    for node in nodes:
        reason = why_not(model, node, endpoint_nodes)
        if reason:
            refusals.setdefault(reason, []).append(node.name)
        else:
            eligible.append(node.name)
    if model.host in eligible:
        return HostChoice(model.host)
    if eligible:
        return HostChoice(min(eligible, key=lambda name: (hosted.get(name, 0), name)))
    if not refusals:
        return HostChoice(None, "no node can host it: the cluster has no nodes")
    parts = [f"{', '.join(sorted(names))} {reason}" for reason, names in sorted(refusals.items())]
    return HostChoice(None, "no node can host it: " + "; ".join(parts))
