"""The IGMP/MLD groups OVN has learnt, in Kubernetes terms (pure: rows in, view out).

ovn-controller records each group a port joined in the Southbound table
``IGMP_Group`` (one row per group, switch and chassis, with the member ports).
Here they become group -> members, each member a pod ``<namespace>/<name>``
(from the port's ``namespace`` and ``pod`` external_ids, which ovn-northd
copies from the pod's logical switch port) on its node (the switch's name).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ovnk import RowSnapshot


@dataclass(frozen=True, order=True)
class Member:
    """One port that joined a group: its node, its pod (None for a port that is not a pod's) and port name."""

    node: str
    pod: str | None
    port: str


def pod_of(port: RowSnapshot) -> str | None:
    """``<namespace>/<pod>`` of a pod's port binding (logical port ``<namespace>_<pod>``), else None."""
    namespace = port.external_ids.get("namespace")
    logical_port = str(port["logical_port"])
    if port.external_ids.get("pod") != "true" or not namespace or not logical_port.startswith(f"{namespace}_"):
        return None
    return f"{namespace}/{logical_port[len(namespace) + 1:]}"


def _address_key(address: str) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0, address)
    return (ip.version, int(ip), address)


def learnt_groups(groups: Iterable[RowSnapshot], *, ports: Mapping[str, RowSnapshot],
                  datapaths: Mapping[str, RowSnapshot]) -> dict[str, list[Member]]:
    """Group address -> its members, addresses in numeric order, members by node and pod.

    :param groups: ``IGMP_Group`` rows with ``address``, ``datapath`` and ``ports``.
    :param ports: ``Port_Binding`` rows (with ``logical_port``) by uuid.
    :param datapaths: ``Datapath_Binding`` rows by uuid (their ``external_ids:name`` is the switch).
    """
    found: dict[str, set[Member]] = {}
    for group in groups:
        address = str(group["address"])
        datapath = _one(group["datapath"])
        switch = datapaths[datapath].external_ids.get("name", "?") if datapath is not None and datapath in datapaths else "?"
        members = found.setdefault(address, set())
        for uuid in group["ports"] or ():
            port = ports.get(uuid)
            if port is None:
                continue  # a weak reference to a port deleted meanwhile
            members.add(Member(node=switch, pod=pod_of(port), port=str(port["logical_port"])))
    return {address: sorted(found[address], key=lambda m: (m.node, m.pod or "", m.port))
            for address in sorted(found, key=_address_key)}


def _one(value: object) -> str | None:
    """An optional reference column: a uuid string, or an empty/one-element list."""
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value else None
