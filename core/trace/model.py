"""What ``ovnk trace`` reads from the Northbound and Southbound databases, as plain values.

:class:`OvnState` is a copy of the rows a trace needs (logical ports,
switches, router ports, and the rows logical flows name in their
``stage-hint``), with the lookups the trace makes. Building it from row
snapshots is pure, so the lookups are unit-tested without a database.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk.core.ovn.ids import OBJECT_NAME_KEY
from ovnk.core.ovn.ids import OWNER_TYPE_KEY
from ovnk.core.ovn.reader import RowSnapshot

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NB tables whose rows logical flows point back to (``stage-hint``) and that the trace explains.
EXPLAINED_TABLES = ("ACL", "Load_Balancer", "Logical_Router_Policy", "NAT", "Logical_Router_Static_Route")

#: Columns read per NB table (``name`` and ``external_ids`` come with every row that has them).
NB_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "Logical_Switch": ("ports", "other_config"),
    "Logical_Switch_Port": ("addresses", "type", "options"),
    "Logical_Router_Port": ("mac", "networks"),
    "Logical_Router": ("nat",),
    "Port_Group": ("ports",),
    "ACL": ("match", "action", "direction", "priority"),
    "Load_Balancer": ("vips", "protocol"),
    "Logical_Router_Policy": ("match", "action", "nexthops", "priority"),
    "NAT": ("type", "logical_ip", "external_ip"),
    "Logical_Router_Static_Route": ("ip_prefix", "nexthop"),
}
SB_COLUMNS: Mapping[str, tuple[str, ...]] = {"Logical_Flow": ()}


@dataclass(frozen=True)
class LogicalPort:
    """A logical switch port with what a microflow needs."""

    name: str
    uuid: str
    switch: str
    type: str
    mac: str | None
    ips: tuple[IPAddress, ...]
    options: Mapping[str, str]
    external_ids: Mapping[str, str]

    @property
    def pod(self) -> str | None:
        """``<namespace>/<pod>`` for a pod's port, else ``None``."""
        namespace = self.external_ids.get("namespace")
        if namespace and self.name.startswith(namespace + "_"):
            return f"{namespace}/{self.name[len(namespace) + 1:]}"
        return None


@dataclass(frozen=True)
class ServiceVip:
    """One ``vips`` entry of a Service load balancer: ``ip:port`` -> backends."""

    load_balancer: str
    service: str  # "<namespace>/<name>"
    protocol: str
    vip: IPAddress
    port: int
    backends: tuple[tuple[IPAddress, int], ...]


def _column_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]


def _scalar(value: Any) -> Any:
    """An optional OVSDB column's value (a 0-or-1 set comes back as a list)."""
    items = _column_list(value)
    return items[0] if items else None


def parse_addresses(addresses: Iterable[str]) -> tuple[str | None, tuple[IPAddress, ...]]:
    """MAC and IPs of an LSP ``addresses`` column (``"0a:58:.. 10.244.0.3"``; ``router``/``unknown`` skipped)."""
    for entry in addresses:
        parts = entry.split()
        if not parts or parts[0] in ("router", "unknown", "dynamic"):
            continue
        ips = []
        for part in parts[1:]:
            try:
                ips.append(ipaddress.ip_address(part.split("/")[0]))
            except ValueError:
                continue
        return parts[0], tuple(ips)
    return None, ()


def parse_endpoint(text: str) -> tuple[IPAddress, int] | None:
    """``10.0.0.1:80`` or ``[fd00::1]:80``; ``None`` when not of that form."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        return ipaddress.ip_address(host.strip("[]")), int(port)
    except ValueError:
        return None


@dataclass
class OvnState:
    """The rows of one NB and SB snapshot a trace looks up."""

    ports: dict[str, LogicalPort] = field(default_factory=dict)  # by name
    router_port_macs: dict[str, str] = field(default_factory=dict)  # LRP name -> MAC
    switch_subnets: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = field(default_factory=dict)
    port_groups: list[RowSnapshot] = field(default_factory=list)
    hinted: dict[str, RowSnapshot] = field(default_factory=dict)  # NB uuid prefix (8 hex) -> row
    lflow_hints: dict[str, str] = field(default_factory=dict)  # SB Logical_Flow uuid prefix -> stage-hint
    load_balancers: list[RowSnapshot] = field(default_factory=list)
    router_nats: dict[str, list[RowSnapshot]] = field(default_factory=dict)  # router name -> its NAT rows

    @classmethod
    def from_rows(cls, nb: Mapping[str, list[RowSnapshot]], sb: Mapping[str, list[RowSnapshot]]) -> OvnState:
        state = cls()
        port_rows = {r.uuid: r for r in nb.get("Logical_Switch_Port", [])}
        for switch in nb.get("Logical_Switch", []):
            subnets = []
            other = switch.columns.get("other_config") or {}
            for key in ("subnet", "ipv6_prefix"):
                value = other.get(key)
                if value:
                    try:
                        subnets.append(ipaddress.ip_network(value, strict=False))
                    except ValueError:
                        pass
            state.switch_subnets[switch.name or switch.uuid] = tuple(subnets)
            for port_uuid in _column_list(switch.columns.get("ports")):
                row = port_rows.get(str(port_uuid))
                if row is None or not row.name:
                    continue
                mac, ips = parse_addresses(_column_list(row.columns.get("addresses")))
                state.ports[row.name] = LogicalPort(
                    name=row.name, uuid=row.uuid, switch=switch.name or switch.uuid, type=str(_scalar(row.columns.get("type")) or ""),
                    mac=mac, ips=ips, options=dict(row.columns.get("options") or {}), external_ids=row.external_ids)
        for lrp in nb.get("Logical_Router_Port", []):
            if lrp.name:
                state.router_port_macs[lrp.name] = str(lrp.columns.get("mac") or "")
        state.port_groups = list(nb.get("Port_Group", []))
        state.load_balancers = list(nb.get("Load_Balancer", []))
        for table in EXPLAINED_TABLES:
            for row in nb.get(table, []):
                state.hinted[row.uuid[:8]] = row
        nats = {r.uuid: r for r in nb.get("NAT", [])}
        for router in nb.get("Logical_Router", []):
            state.router_nats[router.name or router.uuid] = [
                nats[str(u)] for u in _column_list(router.columns.get("nat")) if str(u) in nats]
        for lflow in sb.get("Logical_Flow", []):
            hint = lflow.external_ids.get("stage-hint")
            if hint:
                state.lflow_hints[lflow.uuid[:8]] = hint
        return state

    # -- lookups ---------------------------------------------------------------

    def port_with_ip(self, ip: IPAddress, *, switch: str | None = None) -> LogicalPort | None:
        """The (non-router) port holding ``ip``, on ``switch`` if given."""
        for port in self.ports.values():
            if ip in port.ips and port.type != "router" and (switch is None or port.switch == switch):
                return port
        return None

    def router_mac(self, switch: str) -> str | None:
        """The MAC of the router port a switch's ``router`` port peers with (the pods' gateway)."""
        for port in self.ports.values():
            if port.switch == switch and port.type == "router":
                lrp = port.options.get("router-port")
                if lrp and self.router_port_macs.get(lrp):
                    return self.router_port_macs[lrp]
        return None

    def row_of_lflow(self, lflow: str) -> RowSnapshot | None:
        """The NB row (of :data:`EXPLAINED_TABLES`) a logical flow was made from, by its ``stage-hint``."""
        hint = self.lflow_hints.get(lflow[:8])
        return self.hinted.get(hint) if hint else None

    def groups_with_port(self, port: LogicalPort, *, owner_type: str) -> list[str]:
        """``k8s.ovn.org/name`` of every port group of ``owner_type`` that holds ``port``."""
        names = []
        for group in self.port_groups:
            if group.external_ids.get(OWNER_TYPE_KEY) != owner_type:
                continue
            if port.uuid in {str(u) for u in _column_list(group.columns.get("ports"))}:
                names.append(group.external_ids.get(OBJECT_NAME_KEY, group.name or group.uuid))
        return sorted(names)

    def snat_for(self, router: str, source: IPAddress) -> RowSnapshot | None:
        """The SNAT row of ``router`` that applies to ``source`` (the most specific ``logical_ip``)."""
        best: tuple[int, RowSnapshot] | None = None
        for nat in self.router_nats.get(router, []):
            if _scalar(nat.columns.get("type")) != "snat":
                continue
            try:
                network = ipaddress.ip_network(str(_scalar(nat.columns.get("logical_ip"))), strict=False)
            except ValueError:
                continue
            if source.version == network.version and source in network:
                if best is None or network.prefixlen > best[0]:
                    best = (network.prefixlen, nat)
        return best[1] if best else None

    def service_vips(self, service: str | None = None) -> list[ServiceVip]:
        """Every VIP of Service ``<namespace>/<name>``'s load balancers (of every Service without a name)."""
        vips = []
        for lb in self.load_balancers:
            owner = lb.external_ids.get(OBJECT_NAME_KEY)
            if lb.external_ids.get(OWNER_TYPE_KEY) != "Service" or not owner or service not in (None, owner):
                continue
            for key, value in sorted((lb.columns.get("vips") or {}).items()):
                vip = parse_endpoint(key)
                if vip is None:
                    continue
                backends = tuple(b for b in (parse_endpoint(t.strip()) for t in str(value).split(",") if t.strip())
                                 if b is not None)
                vips.append(ServiceVip(load_balancer=lb.name or lb.uuid, service=owner,
                                       protocol=str(_scalar(lb.columns.get("protocol")) or "tcp"), vip=vip[0], port=vip[1],
                                       backends=backends))
        return vips
