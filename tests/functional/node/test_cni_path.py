"""The CNI path end to end: shim -> agent -> veth + br-int -> OVN; traffic between real pod netns."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.ovsnode import netconf

from .conftest import add_ok
from .conftest import cni_error
from .conftest import host_links
from .conftest import iface_map
from .conftest import iface_rows
from .conftest import ping
from .conftest import pod_ip
from .conftest import wired_pod

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

ECHO_SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen()
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
"""

ECHO_CLIENT = """
import socket, sys
payload = bytes(range(256)) * 400  # 100 KiB: many full-size segments through the tunnel
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as conn:
    conn.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
print("echoed" if received == payload else f"mismatch {len(received)}")
"""


@contextlib.contextmanager
def echo_server(argv_prefix: list[str], address: str, port: int) -> Iterator[None]:
    """A TCP echo server (plain Python, no nc) in the netns ``argv_prefix`` enters."""
    proc = subprocess.Popen([*argv_prefix, "python3", "-c", ECHO_SERVER, address, str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield
    finally:
        proc.kill()
        proc.wait()


def echo(pod: PodSandbox, address: str, port: int) -> str:
    return pod.exec(["python3", "-c", ECHO_CLIENT, address, str(port)], check=False, timeout=30).stdout.strip()


def pod_nsenter(pod: PodSandbox) -> list[str]:
    return [paths.system_bin("nsenter"), f"--net={pod.netns_path}", "--"]


def ovs_ports(node: OvsNode) -> set[str]:
    return set(node.vsctl("list-ports", "br-int").split())


def test_pods_on_two_nodes_talk(lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str) -> None:
    # The agent installed the default shim: the static native binary, not the Python file.
    assert node1.shim.read_bytes()[:4] == b"\x7fELF"
    a, result_a = wired_pod(lab, node1, ns, "a")
    b, result_b = wired_pod(lab, node2, ns, "b")
    ip_a, ip_b = pod_ip(result_a), pod_ip(result_b)
    assert ping(a, ip_b).returncode == 0, "pod on node-1 cannot ping pod on node-2 (Geneve)"
    assert ping(b, ip_a).returncode == 0
    b.exec(["ip", "link", "set", "lo", "up"])
    with echo_server(pod_nsenter(b), "0.0.0.0", 8080):
        assert echo(a, ip_b, 8080) == "echoed"
    # A pod reaches its own node's IP (through the management port) and the other node's (through GR).
    assert ping(a, node1.ip).returncode == 0
    with echo_server(node1.nsenter(), node1.ip, 8081):
        assert echo(a, node1.ip, 8081) == "echoed"
    assert ping(a, node2.ip).returncode == 0
    with echo_server(node2.nsenter(), node2.ip, 8082):  # TCP through GR_node-1's SNAT and breth0's conntrack
        assert echo(a, node2.ip, 8082) == "echoed"
    # And the outside world through the shared gateway (SNAT to node-1's IP, replies via conntrack).
    assert ping(a, lab.underlay.ext_ip).returncode == 0


def test_result_and_wiring(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    pod, result = wired_pod(lab, node1, ns, "w")
    annotation = lab.wait_pod_annotated(pod)["default"]
    host = pod.container_id[:15]
    assert result["cniVersion"] == "1.1.0"
    assert result["interfaces"][0]["name"] == host
    assert result["interfaces"][1] == {"name": "eth0", "mac": annotation["mac_address"], "sandbox": pod.netns_path,
                                       "mtu": 1400}
    assert result["ips"] == [{"address": annotation["ip_addresses"][0], "gateway": annotation["gateway_ips"][0],
                              "interface": 1}]
    link = json.loads(pod.exec(["ip", "-j", "addr", "show", "eth0"]).stdout)[0]
    assert link["address"] == annotation["mac_address"]
    assert link["mtu"] == 1400
    assert [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"] == \
        annotation["ip_addresses"]
    routes = pod.exec(["ip", "route"]).stdout
    assert f"default via {annotation['gateway_ips'][0]} dev eth0" in routes
    for route in annotation["routes"]:
        dest = route["dest"].removesuffix("/32")  # ip prints host routes without the length
        assert f"{dest} via {route['nextHop']} dev eth0" in routes
    assert "tx-checksumming: off" in pod.exec(["ethtool", "-k", "eth0"]).stdout
    # netdev: the node's kernel sees the pod's frames on the host end too and must ignore them.
    assert node1.exec(["sysctl", "-n", f"net.ipv4.conf.{host}.rp_filter",
                       f"net.ipv4.conf.{host}.arp_ignore"]).stdout.split() == ["1", "1"]
    ids = iface_map(node1, host, "external_ids")
    assert ids == {**ids, "iface-id": f"{ns}_w", "iface-id-ver": pod.uid, "sandbox": pod.container_id,
                   "attached_mac": annotation["mac_address"], "pod-if-name": "eth0", "ovn-installed": "true",
                   "ip_addresses": annotation["ip_addresses"][0]}
    assert iface_map(node1, host, "other_config") == {"transient": "true"}
    assert node1.vsctl("port-to-br", host).strip() == "br-int"


def test_add_twice_is_idempotent(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    pod, first = wired_pod(lab, node1, ns, "twice")
    host = pod.container_id[:15]
    rows, links = iface_rows(node1, host), host_links(node1)
    second = add_ok(lab, pod)
    assert second == first
    assert iface_rows(node1, host) == rows
    assert host_links(node1)[host] == links[host]


def test_del_cleans_up_and_is_idempotent(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    pod, _ = wired_pod(lab, node1, ns, "gone")
    host = pod.container_id[:15]
    assert host in ovs_ports(node1)
    deleted = lab.cni(pod, "DEL")
    assert deleted.returncode == 0, deleted.stdout
    assert host not in ovs_ports(node1)
    assert host not in host_links(node1)
    assert lab.cni(pod, "DEL").returncode == 0  # nothing left: still a success
    # The runtime may call DEL after the netns is gone, and for containers we never saw.
    lab.delete_pod_netns(pod)
    assert lab.cni(pod, "DEL").returncode == 0
    assert lab.cni(pod, "DEL", env={"CNI_CONTAINERID": "never-seen-0123456789", "CNI_NETNS": ""}).returncode == 0


def test_del_after_netns_vanished(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    pod, _ = wired_pod(lab, node1, ns, "vanished")
    lab.delete_pod_netns(pod)  # the kernel drops the veth pair with the netns
    done = lab.cni(pod, "DEL")
    assert done.returncode == 0, done.stdout
    assert pod.container_id[:15] not in ovs_ports(node1)


def test_check_passes_then_reports_a_mismatch(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    pod, result = wired_pod(lab, node1, ns, "checked")
    check_conf = netconf(prevResult=result)
    assert lab.cni(pod, "CHECK", config=check_conf).returncode == 0
    pod.exec(["ip", "addr", "flush", "dev", "eth0"])
    error = cni_error(lab.cni(pod, "CHECK", config=check_conf))
    assert error["code"] == 106
    assert result["ips"][0]["address"] in error["msg"]


def test_gc_removes_attachments_the_runtime_no_longer_lists(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    kept, _ = wired_pod(lab, node1, ns, "kept")
    stale, _ = wired_pod(lab, node1, ns, "stale")
    valid = [{"containerID": kept.container_id, "ifname": "eth0"}]
    done = lab.cni(kept, "GC", config=netconf(**{"cni.dev/valid-attachments": valid}))
    assert done.returncode == 0, done.stdout
    ports = ovs_ports(node1)
    assert kept.container_id[:15] in ports
    assert stale.container_id[:15] not in ports
    assert stale.container_id[:15] not in host_links(node1)
    assert "ovn-k8s-mp0" in ports  # not a pod port: never collected


@pytest.fixture
def libcni_cache() -> Iterator[None]:
    yield
    # cnitool caches results under /var/lib/cni (no option to move it); remove what it left for us.
    for leftover in Path("/var/lib/cni").glob("results/ovn-kubernetes-*"):
        leftover.unlink()
    for folder in (Path("/var/lib/cni/results"), Path("/var/lib/cni")):
        with contextlib.suppress(OSError):
            folder.rmdir()


@pytest.mark.usefixtures("libcni_cache")
def test_cnitool_drives_add_check_del(lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str,
                                      tmp_path: Path) -> None:
    """libcni (cnitool) reads the agent's config file and runs the installed shim, as a runtime does."""
    pod = lab.create_pod(node1, ns, "cnitool")
    _peer, peer_result = wired_pod(lab, node2, ns, "peer")
    lab.wait_pod_annotated(pod)
    conf = json.loads(node1.cni_conf_file.read_text())
    if conf["cniVersion"] == "1.1.0":
        # The libcni cnitool is built from (Debian's) knows results up to 1.0.0 only.
        conf["cniVersion"] = "1.0.0"
    (tmp_path / node1.cni_conf_file.name).write_text(json.dumps(conf))
    env = {
        "NETCONFPATH": str(tmp_path),
        "CNI_PATH": str(node1.cni_bin_dir),
        "CNI_ARGS": f"K8S_POD_NAMESPACE={ns};K8S_POD_NAME=cnitool;K8S_POD_UID={pod.uid}",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }

    def cnitool(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([paths.tool_bin("cnitool"), command, "ovn-kubernetes", pod.netns_path], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    added = cnitool("add")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["interfaces"][1]["sandbox"] == pod.netns_path
    assert ping(pod, pod_ip(peer_result)).returncode == 0
    checked = cnitool("check")
    assert checked.returncode == 0, checked.stderr
    ports = [p for p in ovs_ports(node1) if p.startswith("cnitool-")]
    assert len(ports) == 1
    deleted = cnitool("del")
    assert deleted.returncode == 0, deleted.stderr
    assert ports[0] not in ovs_ports(node1)
    assert ports[0] not in host_links(node1)


@contextlib.contextmanager
def second_sandbox(pod: PodSandbox) -> Iterator[PodSandbox]:
    """The same pod in a new sandbox (a netns and container id of its own), as a runtime re-creates it."""
    netns = f"{pod.netns}-2"
    subprocess.run([paths.system_bin("ip"), "netns", "add", netns], check=True)
    try:
        yield dataclasses.replace(pod, netns=netns, container_id=uuid.uuid4().hex + uuid.uuid4().hex)
    finally:
        hostnet.delete_netns(netns)


def test_add_under_a_new_sandbox_evicts_the_stale_port(lab: NodeLab, node1: OvsNode, node2: OvsNode,
                                                       ns: str) -> None:
    """ADD of an already-wired pod under a second container id (its sandbox re-created by the runtime,
    the old one never deleted) replaces the old OVS port: one port per pod, traffic through the new one."""
    _peer, peer_result = wired_pod(lab, node2, ns, "peer")
    pod, _ = wired_pod(lab, node1, ns, "again")
    old_host = pod.container_id[:15]
    with second_sandbox(pod) as again:
        added = lab.cni(again, "ADD")
        assert added.returncode == 0, f"ADD under a second container id failed: {added.stdout} {added.stderr}"
        new_host = again.container_id[:15]
        ports = ovs_ports(node1)
        assert new_host in ports and old_host not in ports
        assert [i for i in ports if iface_map(node1, i, "external_ids").get("iface-id") == f"{ns}_again"] == [new_host]
        assert ping(again, pod_ip(peer_result)).returncode == 0
        assert f"pod {ns}/again: removed stale OVS port {old_host}" in node1.agent_log.read_text()
        assert old_host not in host_links(node1)  # its veth went with it
        # The runtime's late DEL of the old sandbox succeeds and leaves the new one alone.
        assert lab.cni(pod, "DEL").returncode == 0
        assert new_host in ovs_ports(node1)
        assert lab.cni(again, "DEL").returncode == 0
        assert new_host not in ovs_ports(node1)


@pytest.mark.usefixtures("libcni_cache")
def test_cnitool_add_under_a_second_sandbox_evicts_the_first(lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str,
                                                             tmp_path: Path) -> None:
    """libcni names the container after the netns: the same pod ADDed from a second netns is a second sandbox."""
    pod = lab.create_pod(node1, ns, "cnitool-twice")
    _peer, peer_result = wired_pod(lab, node2, ns, "peer2")
    lab.wait_pod_annotated(pod)
    conf = json.loads(node1.cni_conf_file.read_text())
    conf["cniVersion"] = "1.0.0"  # Debian's libcni knows results up to 1.0.0
    (tmp_path / node1.cni_conf_file.name).write_text(json.dumps(conf))
    env = {"NETCONFPATH": str(tmp_path), "CNI_PATH": str(node1.cni_bin_dir),
           "CNI_ARGS": f"K8S_POD_NAMESPACE={ns};K8S_POD_NAME=cnitool-twice;K8S_POD_UID={pod.uid}",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def cnitool(command: str, sandbox: PodSandbox) -> subprocess.CompletedProcess[str]:
        return subprocess.run([paths.tool_bin("cnitool"), command, "ovn-kubernetes", sandbox.netns_path], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    def pod_ports() -> list[str]:
        return sorted(p for p in ovs_ports(node1)
                      if iface_map(node1, p, "external_ids").get("iface-id") == f"{ns}_cnitool-twice")

    first = cnitool("add", pod)
    assert first.returncode == 0, first.stderr
    (old_port,) = pod_ports()
    with second_sandbox(pod) as again:
        second = cnitool("add", again)
        assert second.returncode == 0, f"cnitool add from a second sandbox failed: {second.stdout} {second.stderr}"
        (new_port,) = pod_ports()
        assert new_port != old_port
        assert ping(again, pod_ip(peer_result)).returncode == 0
        assert cnitool("del", pod).returncode == 0
        assert pod_ports() == [new_port]
        assert cnitool("del", again).returncode == 0
        assert pod_ports() == []
