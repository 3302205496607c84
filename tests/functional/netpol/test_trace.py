"""NetworkPolicy end to end through the logical flows: probe matrices over ovn-trace.

Every step changes policies (or labels) through the real API server, waits
for the controller to settle and checks a full matrix of new connections
from every pod to every pod. Expectations are written as the Kubernetes
semantics, not as the rows we generate.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

import pytest

from ovnk.core.kube.resources import NODES
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import PodInfo
from tests.functional.netpol.probes import Probe
from tests.functional.netpol.probes import TraceProber
from tests.functional.netpol.probes import assert_matrix
from tests.functional.netpol.probes import probes
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

TCP80 = [("tcp", 80)]


def check(cluster: NetpolCluster, pods: dict[str, PodInfo], ports: list[tuple[str, int]],
          expected: Callable[[Probe], bool], *, sources: list[str] | None = None) -> None:
    cluster.settle()
    cluster.central.wait_northd()
    prober = TraceProber(cluster, pods)
    matrix = probes(pods, ports)
    if sources is not None:
        matrix = [p for p in matrix if p.src in sources]
    assert_matrix(prober, matrix, expected)


def ns_of(label: str) -> str:
    return label.split("/", 1)[0]


def test_ingress_selectors_deny_all_same_namespace_namespace_and_pod_selectors(cluster: NetpolCluster) -> None:
    blue = cluster.namespace("blue", labels={"team": "blue"})
    red = cluster.namespace("red", labels={"team": "red"})
    green = cluster.namespace("green", labels={"team": "green"})
    cluster.pod(blue, "a1", node="np-a", labels={"app": "web"})
    cluster.pod(blue, "a2", node="np-b", labels={"app": "db"})
    cluster.pod(red, "b1", node="np-a", labels={"app": "web"})
    cluster.pod(red, "b2", node="np-b", labels={"app": "client"})
    cluster.pod(green, "c1", node="np-b", labels={"app": "client"})
    pods = {p.label: p for ns, count in ((blue, 2), (red, 2), (green, 1)) for p in cluster.pods(ns, count).values()}
    a1, a2, b1, b2, c1 = (f"{blue}/a1", f"{blue}/a2", f"{red}/b1", f"{red}/b2", f"{green}/c1")

    check(cluster, pods, TCP80, lambda p: True)

    # Deny all ingress into blue.
    cluster.policy(blue, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    check(cluster, pods, TCP80, lambda p: ns_of(p.dst) != blue)

    # Allow from the same namespace.
    cluster.policy(blue, "same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    check(cluster, pods, TCP80, lambda p: ns_of(p.dst) != blue or ns_of(p.src) == blue)

    # Allow from namespaces labelled team=red.
    cluster.policy(blue, "from-red", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}}]}]})

    def blue_rules(p: Probe) -> bool:
        return ns_of(p.dst) != blue or ns_of(p.src) in (blue, red)
    check(cluster, pods, TCP80, blue_rules)

    # red's web pods accept only clients of green namespaces (namespace AND pod selector).
    cluster.policy(red, "web-from-green-clients", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "green"}},
                   "podSelector": {"matchLabels": {"app": "client"}}}]}]})

    def with_red_web(p: Probe) -> bool:
        if p.dst == b1:
            return p.src == c1
        return blue_rules(p)
    check(cluster, pods, TCP80, with_red_web)

    # Relabel green as red: c1 now reaches blue, and no longer b1.
    cluster.label_namespace(green, {"team": "red"})

    def relabelled(p: Probe) -> bool:
        if p.dst == b1:
            return False
        return ns_of(p.dst) != blue or ns_of(p.src) in (blue, red, green)
    check(cluster, pods, TCP80, relabelled)

    # Relabel b2 (red) as not a client and c1's namespace back: only c1 reaches b1 again.
    cluster.label_namespace(green, {"team": "green"})
    check(cluster, pods, TCP80, with_red_web)
    assert {a1, a2, b2} < set(pods)

    # Deleting every policy restores all traffic.
    for ns, name in ((blue, "deny-all"), (blue, "same-ns"), (blue, "from-red"), (red, "web-from-green-clients")):
        cluster.delete_policy(ns, name)
    check(cluster, pods, TCP80, lambda p: True)


def test_default_deny_lets_the_management_port_and_hairpin_traffic_through(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("mgmt")
    cluster.pod(ns, "srv", node="np-a")
    cluster.pod(ns, "peer", node="np-b")
    pods = cluster.pods(ns, 2)
    srv = pods["srv"]
    cluster.policy(ns, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    cluster.settle()
    cluster.central.wait_northd()
    mgmt_mac = next(str(nb_value(r["addresses"])).split()[0] for r in cluster.env.nb_rows("Logical_Switch_Port")
                    if nb_value(r["name"]) == "k8s-np-a")
    router_mac = cluster.rtos_mac("np-a")

    def reaches_srv(inport: str, eth_src: str, ip_src: str) -> bool:
        flow = (f'inport == "{inport}" && eth.src == {eth_src} && eth.dst == {srv.mac} && ip4.src == {ip_src} && '
                f"ip4.dst == {srv.ip} && ip.ttl == 64 && tcp && tcp.src == 33333 && tcp.dst == 8080")
        return f'output to "{srv.lsp}"' in cluster.central.trace("np-a", flow, *(["--ct=new"] * 6))

    # kubelet probes through the node's management port (.2) pass the default deny...
    assert reaches_srv("k8s-np-a", mgmt_mac, cluster.mgmt_ip("np-a"))
    # ... and so does service traffic the gateway SNATed to the hairpin masquerade IP ...
    assert reaches_srv("stor-np-a", router_mac, "169.254.0.5")
    # ... while a routed pod of another node does not.
    assert not reaches_srv("stor-np-a", router_mac, pods["peer"].ip)


def node_subnet(cluster: NetpolCluster, node: str) -> ipaddress.IPv4Network:
    obj = cluster.client.get(NODES, node)
    assert obj is not None
    return ipaddress.IPv4Network(json.loads(obj["metadata"]["annotations"]["k8s.ovn.org/node-subnets"])["default"][0])


def test_ip_block_with_except_and_port_restrictions(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("ipb")
    cluster.pod(ns, "srv", node="np-b", labels={"app": "srv"})
    cluster.pod(ns, "near", node="np-a")
    cluster.pod(ns, "far", node="np-b")
    pods = {p.label: p for p in cluster.pods(ns, 3).values()}
    srv = f"{ns}/srv"
    excluded = node_subnet(cluster, "np-a")
    cluster.policy(ns, "ipblock", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [{
        "from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [str(excluded)]}}],
        "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 53}],
    }]})

    def expected(p: Probe) -> bool:
        if p.dst != srv:
            return True
        in_block = ipaddress.IPv4Address(pods[p.src].ip) not in excluded
        return in_block and (p.protocol, p.port) in (("tcp", 80), ("udp", 53))
    check(cluster, pods, [("tcp", 80), ("tcp", 81), ("udp", 53)], expected)


def test_excepts_of_everything_and_a_host_excepted_here_but_allowed_elsewhere(cluster: NetpolCluster) -> None:
    """``0.0.0.0/0`` minus single hosts (issue 24 D2: written as positive prefixes now), with the
    NetworkPolicy semantics kept: an except only narrows its own block, so a host excepted by one
    policy (or one block) but allowed by another stays allowed."""
    ns = cluster.namespace("exc")
    cluster.pod(ns, "srv", node="np-b", labels={"app": "srv"})
    for index, node in enumerate(("np-a", "np-b", "np-a", "np-b")):
        cluster.pod(ns, f"c{index}", node=node, labels={"client": f"c{index}"})
    pods = {p.label: p for p in cluster.pods(ns, 5).values()}
    srv, c0, c1, c2, c3 = (f"{ns}/{n}" for n in ("srv", "c0", "c1", "c2", "c3"))
    host = {label: f"{pods[label].ip}/32" for label in (c0, c1, c2)}
    # Decoys: 40 excepted /32s around the pods' addresses that belong to nobody.
    base = int(ipaddress.IPv4Address(pods[c0].ip)) & ~0xFFFF
    decoys = [f"{ipaddress.IPv4Address(base + 0x8000 + 7 * i)}/32" for i in range(40)]
    cluster.policy(ns, "most", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": [host[c0], host[c1], host[c2], *decoys]}}]}]})
    # c1 comes back through a second policy, c2 through a second block of the same rule.
    cluster.policy(ns, "back", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [{"from": [
        {"ipBlock": {"cidr": host[c1]}}]}]})
    cluster.replace_policy(ns, "most", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": [host[c0], host[c1], host[c2], *decoys]}},
        {"ipBlock": {"cidr": host[c2]}}]}]})
    acl = next(a for a in cluster.owned("ACL", "NetworkPolicy", f"{ns}:most") if "ip4.src ==" in a["match"])
    assert "!=" not in acl["match"]

    def expected(p: Probe) -> bool:
        return p.dst != srv or p.src in (c1, c2, c3)
    check(cluster, pods, TCP80, expected)


def test_named_ports_and_end_port_ranges(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("ports")
    cluster.pod(ns, "s1", node="np-a", labels={"app": "srv"}, ports=[{"name": "http", "containerPort": 8080}])
    cluster.pod(ns, "s2", node="np-b", labels={"app": "srv"}, ports=[{"name": "http", "containerPort": 9090}])
    cluster.pod(ns, "cli", node="np-b", labels={"app": "cli"})
    pods = {p.label: p for p in cluster.pods(ns, 3).values()}
    s1, s2 = f"{ns}/s1", f"{ns}/s2"
    cluster.policy(ns, "named", {"podSelector": {"matchLabels": {"app": "srv"}},
                                 "ingress": [{"ports": [{"port": "http"}]}]})
    ports = [("tcp", 8080), ("tcp", 9090), ("tcp", 1500)]

    def named(p: Probe) -> bool:
        if p.dst == s1:
            return p.port == 8080
        if p.dst == s2:
            return p.port == 9090
        return True
    check(cluster, pods, ports, named)

    # Kubernetes 1.20 prunes endPort: feed the controller the object a newer API server would store.
    cluster.inject_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "range", "namespace": ns, "resourceVersion": "1"},
                           "spec": {"podSelector": {"matchLabels": {"app": "srv"}},
                                    "ingress": [{"ports": [{"protocol": "TCP", "port": 1000, "endPort": 2000}]}]}})
    edges = [("tcp", 999), ("tcp", 1000), ("tcp", 1500), ("tcp", 2000), ("tcp", 2001), ("tcp", 8080)]

    def with_range(p: Probe) -> bool:
        return named(p) or (p.dst in (s1, s2) and 1000 <= p.port <= 2000)
    check(cluster, pods, edges, with_range)
    cluster.remove_injected_policy(ns, "range")
    check(cluster, pods, ports, named)


def test_egress_deny_all_with_dns_exception_update_and_delete(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("egress")
    other = cluster.namespace("egress-other")
    cluster.pod(ns, "dns", node="np-b", labels={"app": "dns"})
    cluster.pod(ns, "web", node="np-a", labels={"app": "web"})
    cluster.pod(ns, "cli", node="np-a", labels={"app": "cli"})
    cluster.pod(other, "dns2", node="np-a", labels={"app": "dns"})
    pods = {p.label: p for n, count in ((ns, 3), (other, 1)) for p in cluster.pods(n, count).values()}
    dns, web, cli = f"{ns}/dns", f"{ns}/web", f"{ns}/cli"
    ports = [("udp", 53), ("tcp", 53), ("tcp", 80)]
    cluster.policy(ns, "cli-egress", {"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"],
                                      "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "dns"}}}],
                                                  "ports": [{"protocol": "UDP", "port": 53}]}]})

    def dns_only(p: Probe) -> bool:
        if p.src != cli:
            return True  # only cli is isolated, and only for egress
        return p.dst == dns and (p.protocol, p.port) == ("udp", 53)
    check(cluster, pods, ports, dns_only)

    # Update: web over TCP 80 instead of DNS.
    cluster.replace_policy(ns, "cli-egress", {"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"],
                                              "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                                          "ports": [{"protocol": "TCP", "port": 80}]}]})
    check(cluster, pods, ports, lambda p: p.src != cli or (p.dst == web and (p.protocol, p.port) == ("tcp", 80)))
    # The UDP ACL of the old version is gone, not merely shadowed.
    acls = cluster.owned("ACL", "NetworkPolicy", f"{ns}:cli-egress")
    assert [a["external_ids"]["port-policy-protocol"] for a in acls] == ["tcp"]

    # Deletion restores everything.
    cluster.delete_policy(ns, "cli-egress")
    check(cluster, pods, ports, lambda p: True, sources=[cli])
