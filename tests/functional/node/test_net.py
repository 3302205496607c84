"""The netlink facade against the real kernel, in network namespaces of our own (no OVS needed)."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from ovnk.core.node.net import NetError
from ovnk.core.node.net import NetFacade
from ovnk.core.node.netbatch import configure_pod_interface
from ovnk.core.node.netbatch import entered_netns
from ovnk.core.node.netbatch import random_mac

pytestmark = pytest.mark.node

GATEWAY = ipaddress.ip_address("10.244.1.1")
ADDRESS = ipaddress.ip_interface("10.244.1.5/24")


def ip_json(netns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out or "[]"))


@pytest.fixture
def two_netns() -> Iterator[tuple[str, str]]:
    """A "node" and a "pod" namespace."""
    names = (f"ovnk-tn-{uuid.uuid4().hex[:6]}", f"ovnk-tp-{uuid.uuid4().hex[:6]}")
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    yield names
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_veth_with_the_peer_created_in_the_pod_netns(two_netns: tuple[str, str]) -> None:
    node_ns, pod_ns = two_netns
    mac = random_mac()
    assert int(mac.split(":")[0], 16) & 0x03 == 0x02  # locally administered, unicast
    with NetFacade(f"/run/netns/{node_ns}") as node:
        node.create_veth("h1", peer="eth0", peer_netns=f"/run/netns/{pod_ns}", mtu=1400, mac=mac,
                         peer_mac="0a:58:0a:f4:01:05")
        link = node.require_link("h1")
        assert (link.mac, link.mtu, link.up, link.kind) == (mac, 1400, True, "veth")
        with pytest.raises(NetError) as taken:
            node.create_veth("h1", peer="eth1", peer_netns=f"/run/netns/{pod_ns}", mtu=1400)
        assert taken.value.code == errno.EEXIST
        with pytest.raises(NetError) as missing:
            node.create_veth("h2", peer="eth0", peer_netns="/run/netns/ovnk-no-such-ns", mtu=1400)
        assert missing.value.code == errno.ENOENT
        assert node.delete_link("h1") is True
        assert node.delete_link("h1") is False
    assert ip_json(pod_ns, "link", "show", "dev", "lo")  # the pod side went with the pair
    assert [link["ifname"] for link in ip_json(pod_ns, "link")] == ["lo"]


def test_pod_interface_in_one_batch_and_idempotent(two_netns: tuple[str, str]) -> None:
    node_ns, pod_ns = two_netns
    with NetFacade(f"/run/netns/{node_ns}") as node:
        node.create_veth("h1", peer="eth0", peer_netns=f"/run/netns/{pod_ns}", mtu=1400)
    own = os.readlink("/proc/thread-self/ns/net")
    routes = [(ipaddress.ip_network("0.0.0.0/0"), GATEWAY), (ipaddress.ip_network("10.96.0.0/16"), GATEWAY)]
    for _ in range(2):  # the second time changes nothing and fails on nothing
        configure_pod_interface(f"/run/netns/{pod_ns}", "eth0", addresses=[ADDRESS], routes=routes, tx_checksum=False)
    assert os.readlink("/proc/thread-self/ns/net") == own
    link = ip_json(pod_ns, "addr", "show", "dev", "eth0")[0]
    assert "UP" in link["flags"]  # type: ignore[operator]
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == ["10.244.1.5"]  # type: ignore[union-attr]
    table = {r["dst"]: r.get("gateway") for r in ip_json(pod_ns, "route")}
    assert table["default"] == "10.244.1.1" and table["10.96.0.0/16"] == "10.244.1.1"
    ethtool = subprocess.run(["ip", "netns", "exec", pod_ns, "ethtool", "-k", "eth0"], capture_output=True,
                             text=True, check=True).stdout
    assert "tx-checksumming: off" in ethtool


def test_batch_errors_name_the_request_and_the_thread_comes_back(two_netns: tuple[str, str]) -> None:
    node_ns, pod_ns = two_netns
    with NetFacade(f"/run/netns/{node_ns}") as node:
        node.create_veth("h1", peer="eth0", peer_netns=f"/run/netns/{pod_ns}", mtu=1400)
    own = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(NetError, match=r"replace route 10\.0\.0\.0/8 via 192\.168\.9\.9: Network is unreachable"):
        configure_pod_interface(f"/run/netns/{pod_ns}", "eth0", addresses=[],
                                routes=[(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("192.168.9.9"))])
    with pytest.raises(NetError, match="interface nope does not exist"):
        configure_pod_interface(f"/run/netns/{pod_ns}", "nope", addresses=[], routes=[])
    with pytest.raises(NetError, match="ovnk-no-such-ns"):
        with entered_netns("/run/netns/ovnk-no-such-ns"):
            pass
    assert os.readlink("/proc/thread-self/ns/net") == own


def test_facade_routes_sysctl_and_tx_checksum(two_netns: tuple[str, str]) -> None:
    node_ns, pod_ns = two_netns
    with NetFacade(f"/run/netns/{node_ns}") as node:
        node.create_veth("h1", peer="eth0", peer_netns=f"/run/netns/{pod_ns}", mtu=1400)
        assert node.add_address("h1", ipaddress.ip_interface("192.168.50.1/24")) is True
        assert node.add_address("h1", ipaddress.ip_interface("192.168.50.1/24")) is False
        assert node.ensure_route(ipaddress.ip_network("10.99.0.0/16"), dev="h1",
                                 gateway=ipaddress.ip_address("192.168.50.2")) is True
        assert node.ensure_route(ipaddress.ip_network("10.99.0.0/16"), dev="h1",
                                 gateway=ipaddress.ip_address("192.168.50.2")) is False
        assert [r.dst for r in node.routes(dev="h1") if r.gateway] == [ipaddress.ip_network("10.99.0.0/16")]
        assert node.all_addresses() == {"h1": [ipaddress.ip_interface("192.168.50.1/24")]}
        assert node.tx_checksum("h1") is True
        node.set_tx_checksum("h1", False)
        assert node.tx_checksum("h1") is False
        old = node.sysctl("net/ipv4/conf/h1/rp_filter", "1")
        assert node.sysctl("net/ipv4/conf/h1/rp_filter") == "1" and old != "x"
    # The sysctl was the namespace's, not the host's.
    assert not os.path.exists("/proc/sys/net/ipv4/conf/h1")


def test_ethtool_ioctl_versus_forking_ethtool(two_netns: tuple[str, str]) -> None:
    """What the module docstring claims: the ioctl costs microseconds, forking ethtool milliseconds."""
    node_ns, pod_ns = two_netns
    with NetFacade(f"/run/netns/{node_ns}") as node:
        node.create_veth("h1", peer="eth0", peer_netns=f"/run/netns/{pod_ns}", mtu=1400)
        started = time.perf_counter()
        for _ in range(20):
            node.set_tx_checksum("h1", True)
            node.set_tx_checksum("h1", False)
        ioctl_ms = (time.perf_counter() - started) * 1000 / 40
    started = time.perf_counter()
    for _ in range(5):
        subprocess.run(["ip", "netns", "exec", node_ns, "ethtool", "-K", "h1", "tx", "off"], check=True,
                       capture_output=True)
    fork_ms = (time.perf_counter() - started) * 1000 / 5
    print(f"ethtool: ioctl {ioctl_ms:.3f} ms per change (through the facade), fork {fork_ms:.2f} ms")
    assert ioctl_ms < fork_ms


def test_move_and_rename_links_that_keep_their_identity(two_netns: tuple[str, str]) -> None:
    """``move_link`` (an SR-IOV VF into a pod and back, renamed in the same request) and ``rename_link``."""
    node_ns, pod_ns = two_netns
    node_path, pod_path = f"/run/netns/{node_ns}", f"/run/netns/{pod_ns}"
    with NetFacade(node_path) as node, NetFacade(pod_path) as pod:
        node.create_veth("rep0", peer="vf0", peer_netns=node_path, mtu=1400, peer_mac="0a:58:00:00:00:01")
        node.move_link("vf0", netns=pod_path, new_name="eth0")
        assert node.link("vf0") is None
        moved = pod.require_link("eth0")
        assert (moved.mac, moved.up) == ("0a:58:00:00:00:01", False)
        pod.rename_link("eth0", "net1")
        assert pod.link("eth0") is None and pod.require_link("net1").mac == "0a:58:00:00:00:01"
        pod.move_link("net1", netns=node_path, new_name="vf0")
        back = node.require_link("vf0")
        assert (back.mac, back.up, back.peer_index) == ("0a:58:00:00:00:01", False, node.require_link("rep0").index)
        with pytest.raises(NetError) as missing:
            pod.move_link("net1", netns=node_path)
        assert missing.value.code == errno.ENODEV
        with pytest.raises(NetError) as taken:
            node.rename_link("vf0", "rep0")
        assert taken.value.code == errno.EEXIST
        with pytest.raises(NetError) as gone:
            node.rename_link("nope", "x")
        assert gone.value.code == errno.ENODEV
