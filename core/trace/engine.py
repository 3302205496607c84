"""``ovnk trace``: why can (or can't) pod A reach B, in Kubernetes terms.

The trace builds the microflow of a new connection from the source pod's
logical port (its MAC and IP from NB; the destination MAC is the peer's when
it sits on the same switch, else the pods' gateway router port), runs
``ovn-trace`` on the source pod's switch with ``--ct=new`` for every
connection-tracking step, and reads the result back:

* **allowed** when the packet is output to the destination's logical port
  (for a Service: to the port of one of its backends; for an address no
  port holds: to a ``localnet`` or gateway port, i.e. out of the cluster);
* **dropped** when a step's action is ``drop`` (or, with OVN's tiered ACLs, an
  ACL sets the drop verdict bit); the step names the row it was made from (the flow's ``stage-hint``), and that row's ``external_ids`` name
  the NetworkPolicy and rule (or egress firewall, admin rule...);
* **unreachable** when the packet neither arrives nor is dropped by a row (no
  port has the address: it ends in an ARP request, nowhere, or in the switch's
  "unknown destination" drop).

Every ovnk-owned row the packet met (ACLs it passed, the load balancer that
chose a backend, router policies, NAT) is listed in order as a finding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk.core.errors import OvnkError
from ovnk.core.trace.explain import Finding
from ovnk.core.trace.explain import explain
from ovnk.core.trace.model import IPAddress
from ovnk.core.trace.model import LogicalPort
from ovnk.core.trace.model import OvnState
from ovnk.core.trace.model import ServiceVip
from ovnk.core.trace.parse import ParsedTrace
from ovnk.core.trace.parse import TraceStep
from ovnk.core.trace.parse import parse

#: ``--ct=new`` for more connection-tracking steps than any path takes (both switches, LB, gateway).
CT_STEPS = 8
SOURCE_PORT = 33333
DEFAULT_PORT = 80
ALLOWED, DROPPED, REJECTED, UNREACHABLE = "allowed", "dropped", "rejected", "unreachable"
# Stages whose drop means "no port has this address" (newer OVN drops there explicitly, older
# OVN just ends the trace): the verdict is unreachable, not a policy's drop.
NO_DESTINATION_STAGES = frozenset({"ls_in_l2_unknown"})
#: Port types through which a packet leaves the cluster's logical network.
EXIT_PORT_TYPES = ("localnet", "l2gateway")


class TraceError(OvnkError):
    """The request names something the cluster does not have (no such pod, service, port)."""


@dataclass(frozen=True)
class Endpoint:
    """A resolved source or destination."""

    kind: str  # "pod", "service" or "ip"
    name: str  # "<ns>/<pod>", "<ns>/<service>" or the address
    ip: IPAddress
    port: LogicalPort | None = None
    vip: ServiceVip | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"kind": self.kind, "name": self.name, "ip": str(self.ip)}
        if self.port is not None:
            result["logical_port"] = self.port.name
            result["node_switch"] = self.port.switch
        if self.vip is not None:
            result["load_balancer"] = self.vip.load_balancer
            result["vip"] = f"{self.vip.vip}:{self.vip.port}"
        return result


@dataclass
class TraceResult:
    """The answer: verdict, why, and every ovnk row met on the way."""

    source: Endpoint
    destination: Endpoint
    protocol: str
    port: int
    verdict: str
    reason: str
    findings: list[Finding] = field(default_factory=list)
    decisive: Finding | None = None
    backend: dict[str, Any] | None = None
    snat: dict[str, Any] | None = None
    microflow: str = ""
    datapath: str = ""
    outputs: list[str] = field(default_factory=list)
    raw: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.as_dict(), "destination": self.destination.as_dict(),
            "protocol": self.protocol, "port": self.port, "verdict": self.verdict, "reason": self.reason,
            "decisive": self.decisive.as_dict() if self.decisive else None,
            "findings": [f.as_dict() for f in self.findings], "backend": self.backend, "snat": self.snat,
            "microflow": self.microflow, "datapath": self.datapath, "outputs": self.outputs,
        }


# -- resolving names ------------------------------------------------------------------


def resolve_source(state: OvnState, text: str) -> Endpoint:
    """``<ns>/<pod>`` to the pod's logical port."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise TraceError(f"source {text!r}: expected <namespace>/<pod>")
    port = state.ports.get(f"{namespace}_{name}")
    if port is None or port.mac is None or not port.ips:
        raise TraceError(f"no logical port for pod {text} in OVN (does it exist, is it scheduled and wired?)")
    return Endpoint(kind="pod", name=text, ip=port.ips[0], port=port)


def resolve_destination(state: OvnState, text: str, *, family: int | None, protocol: str,
                        port: int | None) -> Endpoint:
    """``<ns>/<pod>``, ``<ns>/<service>`` (a pod of that name wins) or an IP address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        holder = state.port_with_ip(ip)
        if holder is None:
            # A Service's VIP (ClusterIP, external IP) is traced as that service.
            at_vip = [v for v in state.service_vips() if v.vip == ip and v.protocol == protocol]
            if at_vip:
                return _service_endpoint(at_vip[0].service, at_vip, family=None, protocol=protocol, port=port,
                                         name=text)
        return Endpoint(kind="ip", name=text, ip=ip, port=holder)
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise TraceError(f"destination {text!r}: expected <namespace>/<pod>, <namespace>/<service> or an IP")
    lsp = state.ports.get(f"{namespace}_{name}")
    if lsp is not None and lsp.ips:
        ips = [i for i in lsp.ips if family is None or i.version == family] or list(lsp.ips)
        return Endpoint(kind="pod", name=text, ip=ips[0], port=lsp)
    vips = [v for v in state.service_vips(text) if v.protocol == protocol]
    if not vips:
        raise TraceError(f"no pod or {protocol.upper()} service {text} in OVN (a service needs a load balancer: "
                         "does it exist, with a ClusterIP and a port of that protocol?)")
    return _service_endpoint(text, vips, family=family, protocol=protocol, port=port, name=text)


def _service_endpoint(service: str, vips: list[ServiceVip], *, family: int | None, protocol: str, port: int | None,
                      name: str) -> Endpoint:
    text = service
    chosen = [v for v in vips if (port is None or v.port == port) and (family is None or v.vip.version == family)]
    if not chosen:
        ports = ", ".join(sorted({f"{v.protocol}/{v.port}" for v in vips}))
        raise TraceError(f"service {text} has no {protocol}/{port} (it serves {ports})")
    # The ClusterIP before node-scoped VIPs (NodePorts on node addresses): that is what pods use.
    chosen.sort(key=lambda v: (0 if v.load_balancer.endswith("_cluster") else 1, v.vip.version, str(v.vip)))
    vip = chosen[0]
    return Endpoint(kind="service", name=service if name == service else f"{service} ({name})", ip=vip.vip, vip=vip)


# -- the microflow ----------------------------------------------------------------------


def microflow(state: OvnState, source: Endpoint, destination: Endpoint, *, protocol: str, port: int) -> str:
    """The ``ovn-trace`` microflow of a new connection from ``source`` to ``destination``."""
    assert source.port is not None and source.port.mac is not None
    family = destination.ip.version
    src_ips = [i for i in source.port.ips if i.version == family]
    if not src_ips:
        raise TraceError(f"{source.name} has no IPv{family} address (the destination {destination.ip} is IPv{family})")
    local = state.port_with_ip(destination.ip, switch=source.port.switch) if destination.kind != "service" else None
    if local is not None and local.mac:
        eth_dst = local.mac
    else:
        router = state.router_mac(source.port.switch)
        if router is None:
            raise TraceError(f"switch {source.port.switch} has no router port: {source.name} has no gateway")
        eth_dst = router
    ip = "ip4" if family == 4 else "ip6"
    return (f'inport == "{source.port.name}" && eth.src == {source.port.mac} && eth.dst == {eth_dst} && '
            f"{ip}.src == {src_ips[0]} && {ip}.dst == {destination.ip} && ip.ttl == 64 && "
            f"{protocol} && {protocol}.src == {SOURCE_PORT} && {protocol}.dst == {port}")


# -- reading the result -------------------------------------------------------------------


def collect_findings(state: OvnState, parsed: ParsedTrace, *, hook: Any) -> list[Finding]:
    """Every step made from an ovnk-explainable row, in order (a row met twice in a row once)."""
    findings: list[Finding] = []
    for step in parsed.steps:
        row = state.row_of_lflow(step.lflow)
        if row is None:
            continue
        finding = explain(row, hook=hook, datapath=step.pipeline.datapath, pipeline=step.pipeline.direction,
                          stage=step.stage)
        if findings and findings[-1].uuid == finding.uuid and findings[-1].stage == finding.stage:
            continue
        findings.append(finding)
    return findings


def _selecting_policies(state: OvnState, finding: Finding, step: TraceStep) -> str:
    """For a namespace default deny: which NetworkPolicies select the pod it protects.

    The protected pod is the port of the dropping pipeline: the output port of a to-lport
    (ingress) ACL, the input port of a from-lport (egress) one; for a service that is the
    backend the load balancer chose.
    """
    if finding.owner_type != "NetpolNamespace":
        return ""
    name = step.pipeline.outport if finding.keys.get("direction") == "Ingress" else step.pipeline.inport
    protected = state.ports.get(name or "")
    if protected is None:
        return ""
    # NetworkPolicy rows are named <namespace>:<name> (ovn-kubernetes' keys); say it the Kubernetes way.
    names = [n.replace(":", "/", 1) for n in state.groups_with_port(protected, owner_type="NetworkPolicy")]
    return f"; NetworkPolicies selecting {protected.pod or protected.name}: {', '.join(names)}" if names else ""


def interpret(state: OvnState, parsed: ParsedTrace, *, source: Endpoint, destination: Endpoint, protocol: str,
              port: int, hook: Any) -> TraceResult:
    """The verdict and its reason from a parsed trace."""
    findings = collect_findings(state, parsed, hook=hook)
    outputs = parsed.outputs
    result = TraceResult(source=source, destination=destination, protocol=protocol, port=port, verdict=UNREACHABLE,
                         reason="", findings=findings, outputs=outputs)
    delivered_to = _delivered(state, destination, outputs)
    if delivered_to is not None:
        result.verdict = ALLOWED
        if destination.kind == "service" and delivered_to.ips:
            backend_ip = next((i for i in delivered_to.ips if i.version == destination.ip.version), delivered_to.ips[0])
            backend_port = next((p for ip, p in (destination.vip.backends if destination.vip else ())
                                 if ip == backend_ip), None)
            result.backend = {"ip": str(backend_ip), "port": backend_port, "pod": delivered_to.pod,
                              "logical_port": delivered_to.name}
        if delivered_to.type in EXIT_PORT_TYPES:
            result.reason = f"leaves the cluster network through {delivered_to.name} (switch {delivered_to.switch})"
            _gateway_snat(state, parsed, result, hook=hook)
        else:
            target = delivered_to.pod or delivered_to.name
            result.reason = f"delivered to {target}" + (
                f" (backend {result.backend['ip']}:{result.backend['port']} of service {destination.name})"
                if result.backend else "")
        allows = [f for f in findings if f.table == "ACL" and f.action and f.action.startswith("allow")]
        if allows:
            result.decisive = allows[-1]
            result.reason += "; allowed by " + "; ".join(f.text for f in allows)
        return result
    rejecting = next((s for s in parsed.steps if s.rejects), None)
    if rejecting is not None:
        result.verdict = REJECTED
        row = state.row_of_lflow(rejecting.lflow)
        if row is not None:
            result.decisive = explain(row, hook=hook, datapath=rejecting.pipeline.datapath,
                                      pipeline=rejecting.pipeline.direction, stage=rejecting.stage)
            result.reason = f"rejected (TCP reset / ICMP unreachable) by {result.decisive.text}"
            if row.table == "Load_Balancer" and destination.vip is not None and not destination.vip.backends:
                result.reason += f": service {destination.vip.service} has no ready endpoints"
        else:
            result.reason = f"rejected by OVN in {rejecting.stage} on {rejecting.pipeline.datapath}"
        return result
    dropping = next((s for s in reversed(parsed.steps) if s.drops and s.stage not in NO_DESTINATION_STAGES), None)
    if dropping is not None:
        result.verdict = DROPPED
        row = state.row_of_lflow(dropping.lflow)
        if row is not None:
            result.decisive = explain(row, hook=hook, datapath=dropping.pipeline.datapath,
                                      pipeline=dropping.pipeline.direction, stage=dropping.stage)
            result.reason = f"dropped by {result.decisive.text}" + _selecting_policies(
                state, result.decisive, dropping)
        else:
            result.reason = (f"dropped by OVN in {dropping.stage} on {dropping.pipeline.datapath} "
                             f"(logical flow {dropping.lflow}: {dropping.match})")
        return result
    last = parsed.last_step
    where = f"; the trace ends in {last.stage} on {last.pipeline.datapath}" if last else ""
    if destination.port is None and destination.kind == "ip":
        result.reason = f"no logical port has {destination.ip} and no route leads out of the cluster to it{where}"
    elif destination.kind == "service":
        result.reason = f"service {destination.name} delivered to none of its backends{where}"
    else:
        result.reason = f"the packet never reaches {destination.name}{where}"
    return result


def _gateway_snat(state: OvnState, parsed: ParsedTrace, result: TraceResult, *, hook: Any) -> None:
    """Name the SNAT of the last gateway router the packet crossed on its way out.

    ``ovn-trace`` has no MAC binding for the physical next hop, so the IP packet stops at ARP
    resolution on the gateway router and its ``lr_out_snat`` stage is never printed: the SNAT
    that applies is read from that router's NAT rows (most specific ``logical_ip`` first).
    """
    routers = [s.pipeline.datapath for s in parsed.steps if s.pipeline.datapath in state.router_nats]
    for router in reversed(routers):
        nat = state.snat_for(router, result.source.ip)
        if nat is None:
            continue
        finding = explain(nat, hook=hook, datapath=router, pipeline="egress", stage="lr_out_snat")
        if all(f.uuid != finding.uuid for f in result.findings):
            result.findings.append(finding)
        external = nat.columns.get("external_ip")
        result.snat = {"router": router, "external_ip": str(external), "logical_ip": str(nat.columns.get("logical_ip")),
                       "text": finding.text}
        result.reason += f", SNATed to {external} by {router} ({finding.text})"
        return


def _delivered(state: OvnState, destination: Endpoint, outputs: Sequence[str]) -> LogicalPort | None:
    ports = [state.ports[name] for name in outputs if name in state.ports]
    if destination.kind == "service":
        backend_ips = {ip for ip, _ in (destination.vip.backends if destination.vip else ())}
        return next((p for p in ports if backend_ips & set(p.ips)), None)
    if destination.port is not None:
        return next((p for p in ports if p.name == destination.port.name), None)
    return next((p for p in ports if p.type in EXIT_PORT_TYPES), None)


def trace(state: OvnState, *, source: str, destination: str, protocol: str = "tcp", port: int | None = None,
          run: Callable[[str, str], str], hook: Any = None) -> TraceResult:
    """Trace a new ``protocol`` connection from pod ``source`` to ``destination``.

    :param run: ``run(datapath, microflow)`` runs ``ovn-trace`` and returns its output.
    :param hook: the plugin manager's hook relay (for ``ovnk_trace_explain``).
    :raises TraceError: a name the cluster does not have.
    """
    src = resolve_source(state, source)
    dst = resolve_destination(state, destination, family=None, protocol=protocol, port=port)
    dst_port = port if port is not None else (dst.vip.port if dst.vip else DEFAULT_PORT)
    flow = microflow(state, src, dst, protocol=protocol, port=dst_port)
    assert src.port is not None
    output = run(src.port.switch, flow)
    result = interpret(state, parse(output), source=src, destination=dst, protocol=protocol, port=dst_port, hook=hook)
    result.microflow = flow
    result.datapath = src.port.switch
    result.raw = output
    return result
