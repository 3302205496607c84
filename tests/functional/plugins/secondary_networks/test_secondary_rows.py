"""Secondary networks against a real API server and a real NB (with ovn-northd): NADs, rows, ovn-trace.

Nodes are API objects with the annotations a node agent publishes, pods have
``spec.nodeName`` and no kubelet: this covers the controller half (the NAD
CRD, per-network controllers, IPAM, rows, events, restart repair, plugin
off). Packets are the e2e suite's job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ovnk.core.kube.resources import CRDS
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NODES
from ovnk.plugins.secondary_networks.cli import network_rows
from ovnk.plugins.secondary_networks.controller import NADS
from ovnk.plugins.secondary_networks.models import port_name
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

ENABLE = "plugins.enabled=secondary_networks"
CRD_NAME = "network-attachment-definitions.k8s.cni.cncf.io"
OWNERS = ("SecondaryNetwork", "SecondaryNetworkPod")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def namespace(env: ClusterEnv) -> str:
    name = f"t-sn-{uuid.uuid4().hex[:6]}"
    env.create_namespace(name)
    return name


def nad(env: ClusterEnv, ns: str, nad_name: str, **config: Any) -> None:
    doc = {"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay", "netAttachDefName": f"{ns}/{nad_name}", **config}
    env.client.create(NADS, {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                             "metadata": {"name": nad_name, "namespace": ns}, "spec": {"config": json.dumps(doc)}},
                      namespace=ns)


def rows(env: ClusterEnv, table: str, network: str | None = None) -> dict[str, dict[str, Any]]:
    """name -> row of ovnk's secondary-network rows of ``table`` (of ``network`` when given)."""
    found = {}
    for row in env.nb_rows(table):
        ids = nb_value(row["external_ids"])
        if ids.get("k8s.ovn.org/owner-type") not in OWNERS:
            continue
        if network is not None and ids.get("k8s.ovn.org/network") != network:
            continue
        found[nb_value(row["name"])] = {k: nb_value(v) for k, v in row.items()}
    return found


def all_rows(env: ClusterEnv) -> int:
    return sum(len(rows(env, t)) for t in ("Logical_Router", "Logical_Switch", "Logical_Router_Port",
                                           "Logical_Switch_Port"))


def pod_networks(env: ClusterEnv, ns: str, name: str) -> dict[str, Any]:
    for pod in env.pods(ns):
        if pod["metadata"]["name"] == name:
            return dict(json.loads((pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
                                   or "{}"))
    return {}


def attached(env: ClusterEnv, ns: str, name: str, keys: list[str]) -> dict[str, Any]:
    return dict(wait_for(f"pod {ns}/{name} gets {keys}",
                         lambda: (lambda n: n if all(k in n for k in keys) else None)(pod_networks(env, ns, name))))


def events(env: ClusterEnv, ns: str, name: str) -> list[tuple[str, str]]:
    items, _ = env.client.list(EVENTS, namespace=ns)
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"].get("name") == name]


def node_subnets(env: ClusterEnv, node: str) -> dict[str, Any]:
    obj = env.client.get(NODES, node) or {}
    return dict(json.loads((obj["metadata"].get("annotations") or {}).get("k8s.ovn.org/node-subnets") or "{}"))


def test_existing_nad_crd_is_left_alone(env: ClusterEnv) -> None:
    """A NAD CRD someone else installed (Multus) is not replaced; ours is installed where there is none."""
    existing = env.client.get(CRDS, CRD_NAME)
    if existing is None:
        env.start_controller(ENABLE)
        created = env.client.get(CRDS, CRD_NAME)
        assert created is not None and created["metadata"]["annotations"]["ovnk/crd-install"] == "if-missing"
        env.stop_controller()
        existing = created
    env.client.patch(CRDS, CRD_NAME, {"metadata": {"labels": {"app.kubernetes.io/managed-by": "multus"},
                                                   "annotations": {"ovnk/crd-install": None}}})
    env.start_controller(ENABLE)
    after = env.client.get(CRDS, CRD_NAME)
    assert after is not None
    assert after["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "multus"
    assert "ovnk/crd-install" not in (after["metadata"].get("annotations") or {}), "the CRD was re-applied"


def test_layer3_two_attachments_of_one_nad_trace_isolation_and_teardown(env: ClusterEnv) -> None:
    env.create_node("sn-a", 0)
    env.create_node("sn-b", 1)
    env.start_controller(ENABLE)
    ns = namespace(env)
    nad(env, ns, "blue", name="tenant-blue", topology="layer3", subnets="10.200.0.0/16/24")
    wait_for("per-node subnets", lambda: all("tenant-blue" in node_subnets(env, n) for n in ("sn-a", "sn-b")))
    switches = wait_for("both node switches", lambda: rows(env, "Logical_Switch", "tenant-blue")
                        if len(rows(env, "Logical_Switch", "tenant-blue")) == 2 else None)
    assert set(switches) == {"tenant.blue_sn-a", "tenant.blue_sn-b"}
    assert set(rows(env, "Logical_Router", "tenant-blue")) == {"tenant.blue_ovn_cluster_router"}
    subnet_a = node_subnets(env, "sn-a")["tenant-blue"][0]
    assert switches["tenant.blue_sn-a"]["other_config"]["subnet"] == subnet_a

    env.create_pod(ns, "a", "sn-a", {"k8s.v1.cni.cncf.io/networks": "blue,blue"})
    env.create_pod(ns, "b", "sn-b", {"k8s.v1.cni.cncf.io/networks": "blue"})
    networks_a = attached(env, ns, "a", ["default", f"{ns}/blue", f"{ns}/blue/1"])
    networks_b = attached(env, ns, "b", ["default", f"{ns}/blue"])
    ip_a = networks_a[f"{ns}/blue"]["ip_addresses"][0].split("/")[0]
    ip_a2 = networks_a[f"{ns}/blue/1"]["ip_addresses"][0].split("/")[0]
    ip_b = networks_b[f"{ns}/blue"]["ip_addresses"][0].split("/")[0]
    assert ip_a != ip_a2 and ip_a.startswith(subnet_a.rsplit(".", 1)[0])
    assert networks_a[f"{ns}/blue"]["routes"] == [{"dest": "10.200.0.0/16",
                                                   "nextHop": subnet_a.replace(".0/24", ".1")}]
    assert "routes" not in networks_a[f"{ns}/blue/1"], "the first attachment of a network keeps its routes"
    port_a, port_a2, port_b = (port_name(f"{ns}/blue", ns, "a"), port_name(f"{ns}/blue/1", ns, "a"),
                               port_name(f"{ns}/blue", ns, "b"))
    ports = wait_for("pod ports", lambda: (lambda p: p if {port_a, port_a2, port_b} <= set(p) else None)(
        rows(env, "Logical_Switch_Port", "tenant-blue")))
    mac_a = networks_a[f"{ns}/blue"]["mac_address"]
    assert ports[port_a]["port_security"] == f"{mac_a} {ip_a}"
    assert ports[port_a]["external_ids"]["k8s.ovn.org/nad"] == f"{ns}/blue"
    assert ports[port_a]["options"]["requested-chassis"] == env.chassis["sn-a"]

    # A packet from a's first interface reaches b across nodes through the network's router...
    env.central.wait_northd()
    router_mac = rows(env, "Logical_Router_Port", "tenant-blue")["rtos-tenant.blue_sn-a"]["mac"]
    flow = (f'inport == "{port_a}" && eth.src == {mac_a} && eth.dst == {router_mac} && ip4.src == {ip_a} && '
            f'ip.ttl == 64 && icmp4')
    trace = env.central.trace("tenant.blue_sn-a", f"{flow} && ip4.dst == {ip_b}")
    assert f'output to "{port_b}"' in trace, trace
    # ... and not a default-network address (secondary networks are isolated from it).
    ip_b_default = networks_b["default"]["ip_addresses"][0].split("/")[0]
    isolated = env.central.trace("tenant.blue_sn-a", f"{flow} && ip4.dst == {ip_b_default}")
    assert isolated.rstrip().endswith("drop;") and f'output to "{ns}_b"' not in isolated, isolated

    # Deleting the NAD while pods use it is reported and keeps the network.
    env.client.delete(NADS, "blue", namespace=ns)
    wait_for("event on the pod", lambda: any(r == "NetworkAttachmentDefinitionDeleted"
                                             for r, _ in events(env, ns, "a")))
    assert rows(env, "Logical_Router", "tenant-blue")
    env.delete_pod(ns, "a")
    wait_for("a's ports go", lambda: port_a not in rows(env, "Logical_Switch_Port", "tenant-blue"))
    assert rows(env, "Logical_Router", "tenant-blue"), "b still uses the network"
    env.delete_pod(ns, "b")
    wait_for("the whole network goes with its last pod",
             lambda: not rows(env, "Logical_Router", "tenant-blue") and not rows(env, "Logical_Switch", "tenant-blue"))
    wait_for("node subnets go", lambda: all("tenant-blue" not in node_subnets(env, n) for n in ("sn-a", "sn-b")))
    assert all_rows(env) == 0


def test_layer2_static_ip_localnet_conflict_restart_repair_and_plugin_off(env: ClusterEnv) -> None:
    env.create_node("sn-c", 2)
    env.start_controller(ENABLE)
    ns = namespace(env)
    nad(env, ns, "green", name="green", topology="layer2", subnets="10.50.0.0/24", excludeSubnets="10.50.0.0/28")
    nad(env, ns, "phys", name="phys", topology="localnet", subnets="192.168.77.0/24", vlanID=30,
        physicalNetworkName="physnet-a")
    localnet = wait_for("localnet port", lambda: rows(env, "Logical_Switch_Port", "phys").get("phys_ovn_localnet_port"))
    assert localnet["type"] == "localnet" and localnet["tag_request"] == 30
    assert localnet["options"]["network_name"] == "physnet-a"
    time.sleep(1.1)  # the conflicting NAD below must be younger by creation time (1 s resolution)
    nad(env, ns, "green-other", name="green", topology="layer2", subnets="10.99.0.0/24")
    wait_for("conflict event", lambda: any(r == "NetworkConfigConflict" for r, _ in events(env, ns, "green-other")))

    static = json.dumps([{"name": "green", "ips": ["10.50.0.200/24"], "mac": "0a:58:0a:32:00:c8"},
                         {"name": "phys", "interface": "phys0"}])
    env.create_pod(ns, "s", "sn-c", {"k8s.v1.cni.cncf.io/networks": static})
    env.create_pod(ns, "d", "sn-c", {"k8s.v1.cni.cncf.io/networks": "green"})
    networks_s = attached(env, ns, "s", [f"{ns}/green", f"{ns}/phys"])
    networks_d = attached(env, ns, "d", [f"{ns}/green"])
    assert networks_s[f"{ns}/green"]["ip_addresses"] == ["10.50.0.200/24"]
    assert networks_s[f"{ns}/green"]["mac_address"] == "0a:58:0a:32:00:c8"
    dynamic = networks_d[f"{ns}/green"]["ip_addresses"][0]
    assert int(dynamic.split("/")[0].split(".")[3]) >= 16, "excludeSubnets are not handed out"
    wait_for("ports on the layer2 switch", lambda: (lambda p: p if len(p) == 2 else None)(
        rows(env, "Logical_Switch_Port", "green")))
    switch = rows(env, "Logical_Switch", "green")["green_ovn_layer2_switch"]
    assert switch["other_config"]["subnet"] == "10.50.0.0/24"
    env.central.wait_northd()
    port_s = port_name(f"{ns}/green", ns, "s")
    trace = env.central.trace("green_ovn_layer2_switch",
                              f'inport == "{port_s}" && eth.src == 0a:58:0a:32:00:c8 && '
                              f'eth.dst == {networks_d[f"{ns}/green"]["mac_address"]} && ip4.src == 10.50.0.200 && '
                              f'ip4.dst == {dynamic.split("/")[0]} && ip.ttl == 64 && icmp4')
    assert f'output to "{port_name(f"{ns}/green", ns, "d")}"' in trace, trace
    spoofed = env.central.trace("green_ovn_layer2_switch",
                                f'inport == "{port_s}" && eth.src == 0a:58:0a:32:00:c8 && '
                                f'eth.dst == {networks_d[f"{ns}/green"]["mac_address"]} && ip4.src == 10.50.0.201 && '
                                f'ip4.dst == {dynamic.split("/")[0]} && ip.ttl == 64 && icmp4')
    assert "output to" not in spoofed, "port security drops another source address"

    # Metrics and `ovnk networks` see the same networks.
    env.wait_idle()
    assert env.metric("ovnk_secondary_networks_networks", {"topology": "layer2"}) == 1
    assert env.metric("ovnk_secondary_networks_networks", {"topology": "localnet"}) == 1
    assert env.metric("ovnk_secondary_networks_attachments", {"network": "green"}) == 2
    view = network_rows(env.client)
    green = next(n for n in view["networks"] if n["network"] == "green")
    assert green["nads"] == [f"{ns}/green"] and green["pods"] == [f"{ns}/d", f"{ns}/s"]
    assert f"{ns}/green-other" in view["conflicts"]

    # A restart with nothing changed writes nothing.
    before = all_rows(env)
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    env.start_controller(ENABLE)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"

    # Restart: addresses are re-held (a new pod does not get s's or d's), stray rows are repaired away.
    env.stop_controller()
    env.central.nbctl("ls-add", "stray_ovn_layer2_switch", "--", "set", "Logical_Switch", "stray_ovn_layer2_switch",
                      "external_ids:k8s.ovn.org/owner-type=SecondaryNetwork",
                      "external_ids:k8s.ovn.org/owner-controller=default-network-controller",
                      "external_ids:k8s.ovn.org/name=stray", "external_ids:type=network",
                      "external_ids:k8s.ovn.org/id=default-network-controller:SecondaryNetwork:stray:network")
    env.start_controller(ENABLE)
    wait_for("stray network repaired away", lambda: "stray_ovn_layer2_switch" not in {
        nb_value(r["name"]) for r in env.nb_rows("Logical_Switch")})
    env.create_pod(ns, "e", "sn-c", {"k8s.v1.cni.cncf.io/networks": "green"})
    networks_e = attached(env, ns, "e", [f"{ns}/green"])
    assert networks_e[f"{ns}/green"]["ip_addresses"][0] not in (dynamic, "10.50.0.200/24")
    env.wait_idle()
    assert all_rows(env) == before + 1

    # Plugin off: every row of every secondary network goes; the default network stays.
    default_ports = {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch_Port")
                     if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Pod"}
    assert f"{ns}_s" in default_ports
    env.stop_controller()
    env.start_controller()
    wait_for("every secondary row removed", lambda: all_rows(env) == 0)
    env.wait_idle()
    assert default_ports <= {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch_Port")}
