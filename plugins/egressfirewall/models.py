"""EgressFirewall objects parsed into immutable models (pure: no I/O).

An object is valid when every rule is: exactly one destination (a CIDR, a DNS
name or a node selector), ``Allow`` or ``Deny``, ports of TCP/UDP/SCTP, and at
most :data:`MAX_RULES` rules. The schema (``crds/egressfirewalls.yaml``)
rejects most of this already; what it cannot check (a CIDR that does not
parse, a wildcard name, a selector with a bad operator) is collected here,
every problem of the object in one message, so the status names them all.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk import LabelSelector
from ovnk import SelectorError
from ovnk import parse_selector
from ovnk.names import IPNetwork

#: The only name an EgressFirewall may have (one object per namespace).
OBJECT_NAME = "default"
#: Rules per object: index ``i`` gets priority ``10000 - i``, down to 2001.
MAX_RULES = 8000
START_PRIORITY = 10000
ALLOW = "Allow"
DENY = "Deny"
PROTOCOLS = ("TCP", "UDP", "SCTP")
#: Upstream's CRD pattern for ``dnsName`` (a leading ``*.`` needs the DNSNameResolver, not supported).
DNS_NAME_PATTERN = re.compile(r"^(\*\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+\.?$")
#: ``k8s.ovn.org/acl-logging`` severities OVN accepts.
SEVERITIES = ("alert", "warning", "notice", "info", "debug")


class EgressFirewallError(ValueError):
    """An EgressFirewall that cannot be programmed; the message names every bad field."""


@dataclass(frozen=True)
class Port:
    """``protocol`` in lower case (``tcp``); ``port`` None matches every port of the protocol."""

    protocol: str
    port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One rule; exactly one of ``cidr``, ``dns_name``, ``node_selector`` is set."""

    index: int
    action: str
    ports: tuple[Port, ...] = ()
    cidr: IPNetwork | None = None
    dns_name: str | None = None
    node_selector: LabelSelector | None = None

    @property
    def priority(self) -> int:
        return START_PRIORITY - self.index

    @property
    def allows(self) -> bool:
        return self.action == ALLOW


@dataclass(frozen=True)
class EgressFirewallModel:
    """The rules of one namespace, in order."""

    namespace: str
    rules: tuple[Rule, ...]

    @property
    def dns_names(self) -> frozenset[str]:
        return frozenset(r.dns_name for r in self.rules if r.dns_name is not None)

    @property
    def selects_nodes(self) -> bool:
        return any(r.node_selector is not None for r in self.rules)


@dataclass(frozen=True)
class AclLogging:
    """Severities of the namespace's ``k8s.ovn.org/acl-logging`` (None: not logged)."""

    allow: str | None = None
    deny: str | None = None


def normalize_dns_name(name: str) -> str:
    """The form a name is resolved and shared under: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def _parse_ports(raw: Any, where: str, errors: list[str]) -> tuple[Port, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{where}.ports must be a list")
        return ()
    ports: list[Port] = []
    for index, item in enumerate(raw):
        field = f"{where}.ports[{index}]"
        if not isinstance(item, Mapping):
            errors.append(f"{field} must be an object")
            continue
        protocol = str(item.get("protocol", ""))
        if protocol not in PROTOCOLS:
            errors.append(f"{field}.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
            continue
        number = item.get("port")
        if number in (None, 0):
            port = None
        elif isinstance(number, int) and not isinstance(number, bool) and 0 < number < 65536:
            port = number
        else:
            errors.append(f"{field}.port {number!r} is not a port number (1-65535)")
            continue
        ports.append(Port(protocol.lower(), port))
    return tuple(ports)


def _parse_rule(index: int, raw: Any, errors: list[str]) -> Rule | None:
    where = f"spec.egress[{index}]"
    if not isinstance(raw, Mapping):
        errors.append(f"{where} must be an object")
        return None
    action = raw.get("type")
    if action not in (ALLOW, DENY):
        errors.append(f"{where}.type {action!r} is not Allow or Deny")
    to = raw.get("to")
    if not isinstance(to, Mapping):
        errors.append(f"{where}.to is required")
        return None
    given = [key for key in ("cidrSelector", "dnsName", "nodeSelector") if to.get(key) not in (None, "")]
    if len(given) != 1:
        errors.append(f"{where}.to must have exactly one of cidrSelector, dnsName, nodeSelector"
                      f" (has {', '.join(given) or 'none'})")
        return None
    ports = _parse_ports(raw.get("ports"), where, errors)
    kind = given[0]
    value = to[kind]
    if kind == "cidrSelector":
        try:
            cidr = ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            errors.append(f"{where}.to.cidrSelector {value!r} is not a CIDR")
            return None
        return Rule(index=index, action=str(action), ports=ports, cidr=cidr)
    if kind == "dnsName":
        name = str(value)
        if name.startswith("*."):
            errors.append(f"{where}.to.dnsName {name!r}: wildcard DNS names are not supported")
            return None
        if not DNS_NAME_PATTERN.match(name) or len(normalize_dns_name(name)) > 253:
            errors.append(f"{where}.to.dnsName {name!r} is not a DNS name")
            return None
        return Rule(index=index, action=str(action), ports=ports, dns_name=normalize_dns_name(name))
    try:
        selector = parse_selector(value, field=f"{where}.to.nodeSelector")
    except SelectorError as exc:
        errors.append(str(exc))
        return None
    return Rule(index=index, action=str(action), ports=ports, node_selector=selector)


def parse_egress_firewall(obj: Mapping[str, Any]) -> EgressFirewallModel:
    """Parse an EgressFirewall object.

    :raises EgressFirewallError: listing every problem (the object's name, each bad rule).
    """
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    errors: list[str] = []
    if name != OBJECT_NAME:
        raise EgressFirewallError(f"only one EgressFirewall per namespace, named {OBJECT_NAME!r}, is used "
                                  f"(this one is named {name!r})")
    raw_rules = (obj.get("spec") or {}).get("egress")
    if not isinstance(raw_rules, list):
        raise EgressFirewallError("spec.egress must be a list of rules")
    if len(raw_rules) > MAX_RULES:
        raise EgressFirewallError(f"spec.egress has {len(raw_rules)} rules; at most {MAX_RULES} are allowed")
    rules = [rule for index, raw in enumerate(raw_rules) if (rule := _parse_rule(index, raw, errors)) is not None]
    if errors:
        raise EgressFirewallError("; ".join(errors))
    return EgressFirewallModel(namespace=str(meta.get("namespace", "")), rules=tuple(rules))


def parse_acl_logging(raw: str | None) -> AclLogging:
    """The namespace's ``k8s.ovn.org/acl-logging``; anything unreadable means no logging (core's
    NetworkPolicy reports a bad annotation on the namespace)."""
    if not raw:
        return AclLogging()
    try:
        doc = json.loads(raw)
    except ValueError:
        return AclLogging()
    if not isinstance(doc, Mapping):
        return AclLogging()
    allow, deny = doc.get("allow"), doc.get("deny")
    return AclLogging(allow=allow if allow in SEVERITIES else None, deny=deny if deny in SEVERITIES else None)
