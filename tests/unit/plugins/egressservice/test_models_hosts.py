"""EgressService's pure logic: parsing with its Service, endpoints, host choice, rows, node state."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ovnk.plugins.egressservice import nb
from ovnk.plugins.egressservice.hosts import choose_host
from ovnk.plugins.egressservice.models import EgressServiceError
from ovnk.plugins.egressservice.models import Endpoint
from ovnk.plugins.egressservice.models import HostCandidate
from ovnk.plugins.egressservice.models import endpoints
from ovnk.plugins.egressservice.models import host_label
from ovnk.plugins.egressservice.models import parse_egressservice
from ovnk.plugins.egressservice.models import parse_network
from ovnk.plugins.egressservice.models import parse_rt_tables
from ovnk.plugins.egressservice.node import ip_rules
from ovnk.plugins.egressservice.node import node_state

CLUSTER = [ipaddress.ip_network("10.244.0.0/16")]


def es(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "web"}, "spec": spec, "status": status or {}}


def svc(*, type_: str = "LoadBalancer", ingress: list[str] | None = None, etp: str = "Cluster") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": type_, "externalTrafficPolicy": etp},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in (ingress or [])]}}}


def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> HostCandidate:
    return HostCandidate.of({"metadata": {"name": name, "labels": labels or {}},
                             "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


def ep_slice(entries: list[tuple[str, str | None, bool | None]], address_type: str = "IPv4") -> dict[str, Any]:
    return {"addressType": address_type, "endpoints": [
        {"addresses": [ip], "nodeName": n, **({"conditions": {"ready": r}} if r is not None else {})}
        for ip, n, r in entries]}


def test_parse_load_balancer_ip_with_selector_and_etp_local() -> None:
    model = parse_egressservice(es({"sourceIPBy": "LoadBalancerIP", "nodeSelector": {"matchLabels": {"a": "b"}}}),
                                svc(ingress=["192.0.2.10", "hostname-only", "192.0.2.10"], etp="Local"))
    assert model.key == "ns/web" and model.snat and model.local_only
    assert model.ingress_ips == (ipaddress.ip_address("192.0.2.10"),)
    assert model.snat_ip(4) == ipaddress.ip_address("192.0.2.10") and model.snat_ip(6) is None
    assert model.label == host_label("ns", "web") == "egress-service.k8s.ovn.org/ns-web"


@pytest.mark.parametrize(("service", "reason"), [
    (None, "ServiceNotFound"),
    (svc(type_="ClusterIP", ingress=["192.0.2.10"]), "ServiceNotLoadBalancer"),
    (svc(ingress=[]), "NoIngressIP"),
])
def test_bad_service_is_an_error_with_a_stable_reason(service: dict[str, Any] | None, reason: str) -> None:
    with pytest.raises(EgressServiceError) as exc:
        parse_egressservice(es({"sourceIPBy": "LoadBalancerIP"}), service)
    assert exc.value.reason == reason and "ns/web" in str(exc.value)


def test_network_mode_needs_no_ingress_ip_and_numeric_tables_are_checked() -> None:
    model = parse_egressservice(es({"sourceIPBy": "Network", "network": "100"}), svc())
    assert not model.snat and model.network == "100"
    with pytest.raises(EgressServiceError, match="not a usable routing table"):
        parse_egressservice(es({"sourceIPBy": "Network", "network": "254"}), svc())
    with pytest.raises(EgressServiceError, match="sourceIPBy"):
        parse_egressservice(es({"sourceIPBy": "Other"}), svc(ingress=["192.0.2.1"]))


def test_routing_table_names_and_numbers() -> None:
    tables = parse_rt_tables("# comment\n255\tlocal\n100 blue # the blue network\nbad line\n")
    assert tables == {"local": 255, "blue": 100}
    assert parse_network("blue", tables) == 100 and parse_network("7") == 7 and parse_network("") is None
    with pytest.raises(EgressServiceError, match="neither"):
        parse_network("red", tables)
    with pytest.raises(EgressServiceError):
        parse_network("0")


def test_endpoints_are_ready_pod_addresses_only() -> None:
    found = endpoints([ep_slice([("10.244.1.5", "n1", True), ("10.244.2.5", "n2", None),
                                 ("10.244.2.6", "n2", False), ("172.18.0.2", "n1", True)]),
                       ep_slice([("10.244.1.5", "n1", True)]), {"addressType": "FQDN", "endpoints": []}],
                      cluster_subnets=CLUSTER)
    assert found == [Endpoint(ipaddress.ip_address("10.244.1.5"), "n1"),
                     Endpoint(ipaddress.ip_address("10.244.2.5"), "n2")]


def test_host_choice_keeps_the_current_host_then_balances_then_explains() -> None:
    model = parse_egressservice(es({"sourceIPBy": "LoadBalancerIP"}, {"host": "n2"}), svc(ingress=["192.0.2.1"]))
    nodes = [node("n1"), node("n2"), node("n3")]
    assert choose_host(model, nodes, [], hosted={"n2": 5}).host == "n2"
    fresh = parse_egressservice(es({"sourceIPBy": "LoadBalancerIP"}), svc(ingress=["192.0.2.1"]))
    assert choose_host(fresh, nodes, [], hosted={"n1": 2, "n2": 1}).host == "n3"
    assert choose_host(fresh, nodes, [], hosted={}).host == "n1"
    # The current host not ready any more: another one takes over.
    assert choose_host(model, [node("n1"), node("n2", ready=False)], [], hosted={}).host == "n1"
    unreachable = HostCandidate(name="n1", labels={}, ready=True, reachable=False)
    choice = choose_host(fresh, [unreachable, node("n2", ready=False)], [], hosted={})
    assert choice.host is None
    assert choice.reason == "no node can host it: n1 does not answer its health check; n2 not Ready"


def test_host_choice_honours_the_selector_and_local_endpoints() -> None:
    selected = parse_egressservice(es({"sourceIPBy": "LoadBalancerIP", "nodeSelector": {"matchLabels": {"egress": "yes"}}}),
                                   svc(ingress=["192.0.2.1"]))
    nodes = [node("n1"), node("n2", labels={"egress": "yes"})]
    assert choose_host(selected, nodes, [], hosted={}).host == "n2"
    assert "does not match spec.nodeSelector" in choose_host(selected, nodes[:1], [], hosted={}).reason
    local = parse_egressservice(es({"sourceIPBy": "LoadBalancerIP"}), svc(ingress=["192.0.2.1"], etp="Local"))
    eps = [Endpoint(ipaddress.ip_address("10.244.2.5"), "n2")]
    assert choose_host(local, nodes, eps, hosted={"n2": 9}).host == "n2"
    assert "no local endpoint" in choose_host(local, nodes, [], hosted={}).reason


def test_reroute_rows_follow_upstream_names_and_families() -> None:
    rows = nb.reroute_policies(controller="c", key="ns/web",
                               endpoint_ips=[ipaddress.ip_address("10.244.1.5"), ipaddress.ip_address("fd00::5")],
                               host_mgmt_ips=[ipaddress.ip_address("10.244.2.2")])
    assert len(rows) == 1, "no policy for a family the host has no management IP of"
    row = rows[0]
    assert row.columns == {"priority": 101, "action": "reroute", "match": "ip4.src == 10.244.1.5",
                           "nexthops": ["10.244.2.2"]}
    assert row.external_ids == {"EgressSVC": "ns/web"}
    assert row.ids.external_ids()["k8s.ovn.org/owner-type"] == "EgressService"
    policy = nb.pod_to_node_policy("c", 4)
    assert policy.columns["priority"] == 102 and policy.columns["match"].startswith("ip4.src == $a")
    assert nb.service_of(nb.POD_TO_NODE) is None and nb.service_of("ns/web") == "ns/web"


def test_node_state_snat_on_the_host_and_rules_for_network() -> None:
    lb = es({"sourceIPBy": "LoadBalancerIP", "network": "100"}, {"host": "n1"})
    net = {"metadata": {"namespace": "ns", "name": "db"}, "spec": {"sourceIPBy": "Network", "network": "blue"},
           "status": {"host": "ALL"}}
    other = {"metadata": {"namespace": "ns", "name": "x"}, "spec": {"sourceIPBy": "LoadBalancerIP"},
             "status": {"host": "n2"}}
    services = {"ns/web": svc(ingress=["192.0.2.10"]), "ns/db": svc(), "ns/x": svc(ingress=["192.0.2.11"])}
    eps = {"web": [Endpoint(ipaddress.ip_address("10.244.1.5"), "n1"), Endpoint(ipaddress.ip_address("10.244.2.5"), "n2")],
           "db": [Endpoint(ipaddress.ip_address("10.244.1.7"), "n1"), Endpoint(ipaddress.ip_address("10.244.2.7"), "n2")],
           "x": [Endpoint(ipaddress.ip_address("10.244.1.9"), "n1")]}
    state = node_state(node="n1", objects=[lb, net, other], services=services,
                       endpoints_of=lambda _ns, name: eps[name], tables={"blue": 200})
    assert {str(k): str(v) for k, v in state.snat.items()} == {"10.244.1.5": "192.0.2.10", "10.244.2.5": "192.0.2.10"}
    assert sorted((str(ip), t) for ip, t in state.rules) == [("10.244.1.5", 100), ("10.244.1.7", 200),
                                                             ("10.244.2.5", 100)]
    assert [r.priority for r in ip_rules(state)] == [5000, 5000, 5000]
    elsewhere = node_state(node="n2", objects=[lb, net], services=services, endpoints_of=lambda _ns, name: eps[name],
                           tables={})
    assert not elsewhere.snat and not elsewhere.rules
    assert elsewhere.problems == ["EgressService ns/db: spec.network 'blue' is neither a routing table number "
                                  "nor a table name the nodes know"]
