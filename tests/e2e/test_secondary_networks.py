"""Secondary networks on the sandbox with real packets: layer3, layer2, localnet (tagged and untagged).

The sandbox has no Multus: the plugin runs with ``attachments = agent`` (the
node agent performs a pod's attachments when the runtime asks for its default
network, and writes ``k8s.v1.cni.cncf.io/network-status``). A second
"physical" network (:mod:`ovnk_lab.physnet`: a Linux bridge joined to every
node and a host on it) sits behind the nodes' ``physnet-a`` bridge mapping.
The module's last test switches the plugin off and checks that everything it
made is gone while default-network pods keep working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk_lab.physnet import PhysicalNetwork
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PHYSNET = "physnet-a"
BRIDGE = "br-phys"
SETTINGS = {"attachments": "agent", "bridge-mappings": f"{PHYSNET}:{BRIDGE}", "bridge-uplinks": f"{BRIDGE}:phys"}
OWNERS = ("SecondaryNetwork", "SecondaryNetworkPod")


@pytest.fixture(scope="module")
def physnet(sandbox: Sandbox) -> Iterator[PhysicalNetwork]:
    net = PhysicalNetwork(sandbox.cluster.underlay.prefix)
    net.create([(n.name, n.netns) for n in sandbox.cluster.nodes])
    sandbox.set_plugins(["secondary_networks"], settings={"secondary_networks": SETTINGS})
    try:
        yield net
    finally:
        net.delete()


@pytest.fixture(scope="module")
def mns(cluster: Cluster, physnet: PhysicalNetwork) -> Iterator[str]:
    name = cluster.namespace()
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def nad(name: str, ns: str, **config: Any) -> dict[str, Any]:
    doc = {"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay", "name": name, "netAttachDefName": f"{ns}/{name}",
           **config}
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns}, "spec": {"config": json.dumps(doc)}}


def pod(name: str, ns: str, node: str, networks: Any = None) -> dict[str, Any]:
    annotations = {}
    if networks is not None:
        annotations["k8s.v1.cni.cncf.io/networks"] = networks if isinstance(networks, str) else json.dumps(networks)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "client", "image": "busybox", "imagePullPolicy": "Never",
                                     "command": ["sleep", "100000"]}]}}


def run_pods(cluster: Cluster, ns: str, docs: list[dict[str, Any]], timeout: float = 180) -> None:
    cluster.apply(*docs)
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", *(f"pod/{d['metadata']['name']}" for d in docs),
                    f"--timeout={int(timeout)}s", timeout=timeout + 30)


def status(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    annotations = cluster.pod(ns, name)["metadata"].get("annotations") or {}
    return list(json.loads(annotations.get("k8s.v1.cni.cncf.io/network-status") or "[]"))


def address(cluster: Cluster, ns: str, name: str, ifname: str) -> str:
    """The IPv4 address of ``ifname`` inside the pod, read from the pod itself."""
    out = cluster.exec(ns, name, "ip", "-o", "-4", "addr", "show", "dev", ifname)
    return out.split(" inet ", 1)[1].split("/", 1)[0]


def secondary_rows(sandbox: Sandbox) -> int:
    assert sandbox.central is not None
    count = 0
    for table in ("Logical_Router", "Logical_Switch", "Logical_Router_Port", "Logical_Switch_Port"):
        doc = json.loads(sandbox.central.nbctl("--format=json", "--columns=external_ids", "list", table))
        for (ids,) in doc["data"]:
            if dict(ids[1]).get("k8s.ovn.org/owner-type") in OWNERS:
                count += 1
    return count


def secondary_ovs_ports(sandbox: Sandbox) -> list[str]:
    found = []
    for node in sandbox.cluster.nodes:
        out = node.ovs_vsctl("--format=json", "--columns=name,external_ids", "list", "Interface")
        for name, ids in json.loads(out)["data"]:
            if "k8s.ovn.org/network" in dict(ids[1]) and dict(ids[1])["k8s.ovn.org/network"] != "default":
                found.append(f"{node.name}/{name}")
    return found


def agent_log_mark(sandbox: Sandbox, node: str) -> int:
    log = sandbox.cluster.node(node).log_dir / "ovnk-node.log"
    return log.stat().st_size if log.exists() else 0


def test_layer3_layer2_localnet_with_real_packets(sandbox: Sandbox, cluster: Cluster, physnet: PhysicalNetwork,
                                                   mns: str) -> None:
    n0, n1 = cluster.nodes[0], cluster.nodes[1]
    cluster.apply(
        nad("l3", mns, topology="layer3", subnets="10.210.0.0/16/24"),
        nad("l2", mns, topology="layer2", subnets="10.211.0.0/24"),
        nad("l2b", mns, topology="layer2", subnets="10.211.0.0/24"),  # same addresses, another network
        nad("phys", mns, topology="localnet", subnets="192.168.77.0/24", excludeSubnets="192.168.77.248/29",
            physicalNetworkName=PHYSNET),
        nad("physv", mns, topology="localnet", subnets="192.168.78.0/24", vlanID=30, physicalNetworkName=PHYSNET),
    )
    run_pods(cluster, mns, [
        pod("a", mns, n0, [{"name": "l3"}, {"name": "l2", "ips": ["10.211.0.50/24"]}, {"name": "phys"},
                           {"name": "physv"}]),
        pod("b", mns, n1, "l3,l3,l2"),
        pod("d", mns, n1, [{"name": "l2b", "ips": ["10.211.0.60/24"]}]),
        pod("p0", mns, n0), pod("p1", mns, n1),
    ])
    # network-status as Multus writes it: the default network first, then each attachment.
    interfaces = [(s["name"], s["interface"]) for s in status(cluster, mns, "a")]
    assert interfaces[0][1] == "eth0" and status(cluster, mns, "a")[0]["default"] is True
    assert interfaces[1:] == [(f"{mns}/l3", "net1"), (f"{mns}/l2", "net2"), (f"{mns}/phys", "net3"),
                              (f"{mns}/physv", "net4")]
    assert address(cluster, mns, "a", "net2") == "10.211.0.50"
    b_l3 = [address(cluster, mns, "b", "net1"), address(cluster, mns, "b", "net2")]
    assert b_l3[0] != b_l3[1] and all(ip.startswith("10.210.") for ip in b_l3)
    assert {s["interface"]: s["ips"] for s in status(cluster, mns, "b")}["net2"] == [b_l3[1]]

    # layer3 across nodes; b's second attachment of the same NAD has its own address and port but
    # leaves the network's routes to the first (one set of routes leads through one interface only).
    assert cluster.ping(mns, "a", b_l3[0]), f"a -> b {b_l3[0]} over layer3"
    assert "10.210.0.0/16" not in cluster.exec(mns, "b", "ip", "route", "show", "dev", "net2")
    # layer2 across nodes with a static IP.
    assert cluster.ping(mns, "a", address(cluster, mns, "b", "net3")), "a -> b over layer2"
    # Two networks with the same subnet are still two networks.
    assert not cluster.ping(mns, "a", "10.211.0.60", count=1), "l2 reached l2b"
    # localnet: the host on the physical network answers untagged traffic...
    assert cluster.ping(mns, "a", physnet.host_ip), "a -> the physical network's host"
    # ... and the VLAN network's frames reach it tagged (the host has no VLAN interface: capture them).
    capture = physnet.capture(filter_="vlan 30", count=2)
    cluster.ping(mns, "a", "192.168.78.254", count=2)
    seen = capture.lines()
    assert seen and all("vlan 30" in line for line in seen), seen
    # The default network is untouched by all this.
    assert cluster.ping(mns, "p0", cluster.pod_ip(mns, "p1"))


def test_nad_deleted_while_used_then_unused(sandbox: Sandbox, cluster: Cluster, mns: str) -> None:
    cluster.kubectl("-n", mns, "delete", "network-attachment-definition", "l2b")
    poll_until("an event on the pod that still uses it", lambda: "NetworkAttachmentDefinitionDeleted" in
               cluster.kubectl("-n", mns, "get", "events", "--field-selector", "involvedObject.name=d", "-o", "json"),
               timeout=60)
    cluster.kubectl("-n", mns, "delete", "pod", "d", "--wait=true", timeout=120)

    def l2b_rows() -> int:
        assert sandbox.central is not None
        return sandbox.central.nbctl("--format=json", "--columns=name", "find", "Logical_Switch",
                                     "external_ids:k8s.ovn.org/network=l2b").count("l2b_ovn_layer2_switch")

    poll_until("the unused network's topology goes", lambda: l2b_rows() == 0, timeout=60)


def test_agent_restart_keeps_interfaces_working(sandbox: Sandbox, cluster: Cluster, physnet: PhysicalNetwork,
                                                 mns: str) -> None:
    node = cluster.nodes[1]
    mark = agent_log_mark(sandbox, node)
    sandbox.restart_agent(node)
    log = sandbox.cluster.node(node).log_dir / "ovnk-node.log"
    poll_until("the agent is ready again", lambda: " ready in " in log.read_text(errors="replace")[mark:],
               timeout=120, interval=0.3)
    for ifname in ("net1", "net3"):
        target = address(cluster, mns, "b", ifname)
        assert cluster.ping(mns, "a", target), f"a -> b {ifname} after the agent restarted"
    assert cluster.ping(mns, "a", physnet.host_ip)


def test_plugin_off_removes_everything_default_pods_keep_working(sandbox: Sandbox, cluster: Cluster,
                                                                  mns: str) -> None:
    # Pods leaving take their attachments with them (DEL of the default network removes them).
    cluster.kubectl("-n", mns, "delete", "pod", "a", "b", "--wait=true", timeout=120)
    poll_until("the attachments' OVS ports go", lambda: not secondary_ovs_ports(sandbox), timeout=60)
    sandbox.set_plugins([])
    poll_until("every secondary-network row goes", lambda: secondary_rows(sandbox) == 0, timeout=60)
    for node in sandbox.cluster.nodes:
        mappings = node.ovs_vsctl("--if-exists", "get", "Open_vSwitch", ".", "external_ids:ovn-bridge-mappings")
        assert PHYSNET not in mappings, f"{node.name}: {mappings}"
        assert BRIDGE not in node.ovs_vsctl("list-br").split(), f"{node.name} still has {BRIDGE}"
    poll_until("default-network pods keep talking",
               lambda: cluster.ping(mns, "p0", cluster.pod_ip(mns, "p1"), count=1), timeout=30)
