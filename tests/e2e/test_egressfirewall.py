"""EgressFirewall on the sandbox with real packets to the outside host.

The outside host is the sandbox's external namespace (the nodes' default
gateway), grown by :class:`ovnk_lab.outside.OutsideHost`: three "internet"
addresses (198.18.0.1-3), ovnk-echo servers on two ports, and a dnsmasq the
controller resolves ``dnsName`` rules with, whose answer the test changes. The
module switches the plugin on in the session sandbox and its last test switches
it off again, checking that every row it made is gone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.images import build_echo_binary
from ovnk_lab.outside import OutsideHost
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import ContinuousProbe
from tests.e2e.conftest import external_echo
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

ALLOWED_PORT = 9461
OTHER_PORT = 9462
NODE_PORT = 9463
NAME = "allowed.ovnk.test"


@pytest.fixture(scope="module")
def outside(sandbox: Sandbox, cluster: Cluster) -> Iterator[dict[str, Any]]:
    host = OutsideHost(sandbox)
    addresses = host.internet_addresses(3)
    dns = host.start_dns({NAME: [addresses[1]]}, ttl=2)
    servers = [external_echo(sandbox, ALLOWED_PORT), external_echo(sandbox, OTHER_PORT)]
    # A host-network server on the second node: what nodeSelector rules open.
    node = sandbox.cluster.nodes[1]
    node_server = subprocess.Popen([paths.system_bin("nsenter"), f"--net={netns_path(node.netns)}",
                                    str(build_echo_binary()), f"{NODE_PORT}/tcp"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.append(node_server)
    sandbox.set_plugins(["egressfirewall"], settings={"egressfirewall": {"dns-servers": dns.server,
                                                                         "dns-min-interval": "1"}})
    try:
        yield {"addresses": addresses, "dns": dns, "node": node, "host": host}
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        host.stop_dns()
        host.remove_internet_addresses()
        cluster.kubectl("label", "nodes", "--all", "e2e-ef-", check=False)


def reaches(cluster: Cluster, ns: str, address: str, port: int, *, pod: str = "client") -> bool:
    return cluster.probe(ns, pod, "tcp", address, port, "hostname", timeout=2) is not None


def status(cluster: Cluster, ns: str) -> dict[str, Any]:
    raw = cluster.kubectl("-n", ns, "get", "egressfirewall", "default", "-o", "json", check=False)
    return dict(json.loads(raw).get("status") or {}) if raw else {}


def firewall(cluster: Cluster, ns: str, rules: list[dict[str, Any]]) -> None:
    cluster.apply({"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall",
                   "metadata": {"name": "default", "namespace": ns}, "spec": {"egress": rules}})


def owned_rows(sandbox: Sandbox, table: str, owner: str) -> list[str]:
    assert sandbox.central is not None
    out = sandbox.central.nbctl("--bare", "--columns=_uuid", "find", table, f'external_ids:"k8s.ovn.org/owner-type"={owner}')
    return out.split()


def test_cidr_port_dns_and_node_rules_with_a_network_policy_and_deny_all(cluster: Cluster, sandbox: Sandbox,
                                                                         outside: dict[str, Any]) -> None:
    one, two, three = outside["addresses"]
    n1, n2 = cluster.nodes
    ns, other = cluster.namespace(), cluster.namespace()
    cluster.run_pods(ns, [{"name": "client", "node": n1, "kind": "echo"}])
    peer = cluster.run_pods(other, [{"name": "peer", "node": n2, "kind": "echo", "labels": {"app": "peer"}}])["peer"]
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peer", "namespace": other},
                   "spec": {"selector": {"app": "peer"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    service_ip = json.loads(cluster.kubectl("-n", other, "get", "service", "peer", "-o", "json"))["spec"]["clusterIP"]
    # A NetworkPolicy that allows every egress: the firewall's denies must still hold.
    cluster.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "allow-all-egress", "namespace": ns},
                   "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}})
    node_ip = outside["node"].ip
    assert reaches(cluster, ns, three, OTHER_PORT) and reaches(cluster, ns, node_ip, NODE_PORT), "open before"
    firewall(cluster, ns, [
        {"type": "Allow", "to": {"cidrSelector": f"{one}/32"}, "ports": [{"protocol": "TCP", "port": ALLOWED_PORT}]},
        {"type": "Allow", "to": {"dnsName": NAME}},
        {"type": "Allow", "to": {"nodeSelector": {"matchLabels": {"e2e-ef": ns}}}},
        {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}},
    ])
    poll_until("status applied", lambda: status(cluster, ns).get("status") == "EgressFirewall Rules applied")
    poll_until("deny-all in force", lambda: not reaches(cluster, ns, three, OTHER_PORT))
    poll_until("the DNS name's address allowed", lambda: reaches(cluster, ns, two, OTHER_PORT))
    assert reaches(cluster, ns, one, ALLOWED_PORT), "allowed CIDR and port"
    assert not reaches(cluster, ns, one, OTHER_PORT), "the CIDR rule allows its port only"
    assert not reaches(cluster, ns, node_ip, NODE_PORT), "nodes are outside the cluster (as upstream)"
    # Inside the cluster nothing changes: the pod, and the service (load-balanced before the ACLs).
    assert cluster.probe(ns, "client", "tcp", peer["status"]["podIP"], 8080, "clientip") is not None
    assert cluster.probe(ns, "client", "tcp", service_ip, 80, "hostname") == "peer"
    # The outside host's other namespace is untouched.
    assert reaches(cluster, other, three, OTHER_PORT, pod="peer")

    # The DNS answer changes: the rule follows.
    outside["dns"].set_hosts({NAME: [three]})
    poll_until("the new answer allowed", lambda: reaches(cluster, ns, three, OTHER_PORT), timeout=30)
    poll_until("the old answer denied", lambda: not reaches(cluster, ns, two, OTHER_PORT), timeout=30)

    # The controller is killed and comes back: allowed traffic never stops, denied stays denied, and
    # the new controller follows a node label (nodeSelector: labelling the node opens its address).
    probe = ContinuousProbe(cluster, ns, "client", three, OTHER_PORT)
    probe.wait_for(3)
    sandbox.restart_controller(0)
    cluster.kubectl("label", "node", n2, f"e2e-ef={ns}", "--overwrite")
    poll_until("the selected node reachable", lambda: reaches(cluster, ns, node_ip, NODE_PORT), timeout=60)
    assert not reaches(cluster, ns, two, OTHER_PORT) and not reaches(cluster, ns, one, OTHER_PORT)
    answered, failed = probe.stop()
    assert answered >= 3 and failed == 0, f"allowed traffic flapped across the restart: {probe.failures()}"

    # A bad edit is reported; the rules in force stay.
    firewall(cluster, ns, [{"type": "Deny", "to": {"cidrSelector": "198.18.0.300/32"}}])
    poll_until("error status", lambda: status(cluster, ns).get("status") == "EgressFirewall Rules not correctly applied")
    assert "198.18.0.300/32' is not a CIDR" in status(cluster, ns)["messages"][0]
    view = subprocess.run([*cluster.sandbox_ovnk(), "egressfirewall", "status"], capture_output=True, text=True,
                          check=True).stdout
    assert f"{ns}/default" in view and "not correctly applied" in view and "is not a CIDR" in view, view
    assert reaches(cluster, ns, three, OTHER_PORT) and not reaches(cluster, ns, two, OTHER_PORT)

    # Namespace deletion removes its ACLs and the DNS sets nobody else names.
    assert owned_rows(sandbox, "ACL", "EgressFirewall") and owned_rows(sandbox, "Address_Set", "EgressFirewallDNS")
    cluster.kubectl("delete", "namespace", ns, other, "--wait=false")
    poll_until("ACLs and DNS sets gone", lambda: not owned_rows(sandbox, "ACL", "EgressFirewall")
               and not owned_rows(sandbox, "Address_Set", "EgressFirewallDNS"), timeout=90)
    cluster.kubectl("label", "node", n2, "e2e-ef-")


def test_plugin_off_removes_every_row_and_traffic_flows(cluster: Cluster, sandbox: Sandbox,
                                                        outside: dict[str, Any]) -> None:
    ns = cluster.namespace()
    cluster.run_pods(ns, [{"name": "client", "node": cluster.nodes[0], "kind": "echo"}])
    firewall(cluster, ns, [{"type": "Allow", "to": {"dnsName": NAME}},
                           {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}])
    poll_until("deny-all in force", lambda: not reaches(cluster, ns, outside["addresses"][0], ALLOWED_PORT))
    sandbox.set_plugins([])
    poll_until("traffic flows with the plugin off", lambda: reaches(cluster, ns, outside["addresses"][0], ALLOWED_PORT),
               timeout=60)
    assert not owned_rows(sandbox, "ACL", "EgressFirewall")
    assert not owned_rows(sandbox, "Address_Set", "EgressFirewallDNS")
    assert not owned_rows(sandbox, "Port_Group", "Namespace"), "no plugin needs namespace port groups now"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
