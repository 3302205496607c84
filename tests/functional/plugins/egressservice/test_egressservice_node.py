"""The host node's SNAT table and ip rules against the real kernel, with a real datagram.

Three network namespaces of the test's own stand in for a pod (behind the
management port), the host node, and the outside host::

    pod (10.244.1.5) --veth-- [mp-es] host [up-es] --veth-- ext (192.0.2.254)

The host forwards between them; the plugin's table (through core's nftables
facade, as the agent writes it) must make the outside see the ingress IP.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from ovnk.core.node.net import NetFacade
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import Owners
from ovnk.plugins.egressservice.node import OWNER
from ovnk.plugins.egressservice.node import NodeState
from ovnk.plugins.egressservice.node import ip_rules
from ovnk.plugins.egressservice.node import nft_table

pytestmark = pytest.mark.node

POD, INGRESS, EXT = "10.244.1.5", "192.0.2.10", "192.0.2.254"
MGMT = "mp-es"


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {"pod": f"es-pod-{tag}", "host": f"es-host-{tag}", "ext": f"es-ext-{tag}"}
    for name in names.values():
        subprocess.run(["ip", "netns", "add", name], check=True)
    host, pod, ext = names["host"], names["pod"], names["ext"]

    def ip(netns: str, *argv: str) -> None:
        subprocess.run(["ip", "-n", netns, *argv], check=True)

    ip(host, "link", "add", MGMT, "type", "veth", "peer", "name", "eth0", "netns", pod)
    ip(host, "link", "add", "up-es", "type", "veth", "peer", "name", "eth0", "netns", ext)
    for netns, dev, address in ((host, MGMT, "10.244.1.2/24"), (host, "up-es", "192.0.2.1/24"),
                                (pod, "eth0", f"{POD}/24"), (ext, "eth0", f"{EXT}/24")):
        ip(netns, "addr", "add", address, "dev", dev)
        ip(netns, "link", "set", dev, "up")
        ip(netns, "link", "set", "lo", "up")
    ip(pod, "route", "add", "default", "via", "10.244.1.2")
    # The outside host reaches the ingress IP through the host (the load balancer's announcement).
    ip(ext, "route", "add", f"{INGRESS}/32", "via", "192.0.2.1")
    ip(ext, "route", "add", "10.244.0.0/16", "via", "192.0.2.1")  # replies to un-SNATed pods (the baseline)
    subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    try:
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "delete", name], check=False)


def source_seen(topology: dict[str, str]) -> str:
    """Send one UDP datagram from the pod to the outside host; the source address it arrived from."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", topology["ext"], sys.executable, "-c",
         "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999)); "
         "s.settimeout(10); data, peer = s.recvfrom(100); s.sendto(data, peer); print(peer[0], flush=True)"],
        stdout=subprocess.PIPE, text=True)
    try:
        client = ("import socket, time\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)\n"
                  "for _ in range(20):\n"
                  f"    s.sendto(b'x', ('{EXT}', 9999))\n"
                  "    try:\n"
                  "        s.recvfrom(100); print('reply'); break\n"
                  "    except OSError:\n"
                  "        time.sleep(0.1)\n")
        reply = subprocess.run(["ip", "netns", "exec", topology["pod"], sys.executable, "-c", client],
                               capture_output=True, text=True, timeout=30, check=False).stdout
        out, _ = server.communicate(timeout=15)
        assert "reply" in reply, "the reply did not come back to the pod (conntrack un-SNAT)"
        return out.strip()
    finally:
        server.kill()


def test_snat_to_the_ingress_ip_and_rules_converge(topology: dict[str, str]) -> None:
    host = f"/run/netns/{topology['host']}"
    ledger = MemoryLedger(Owners([OWNER]))
    nft = NftFacade(netns=host, ledger=ledger)
    net = NetFacade(host, ledger=ledger)
    assert source_seen(topology) == POD, "without the table the pod's own address leaves"

    state = NodeState(snat={ipaddress.ip_address(POD): ipaddress.ip_address(INGRESS)},
                      rules={(ipaddress.ip_address(POD), 1234)})
    assert nft.set_table(OWNER, nft_table(state, mgmt_port=MGMT)) is True
    assert nft.set_table(OWNER, nft_table(state, mgmt_port=MGMT)) is False, "converged: nothing written"
    assert source_seen(topology) == INGRESS

    assert net.set_rules(OWNER, ip_rules(state)) is True
    rules = json.loads(subprocess.run(["ip", "-n", topology["host"], "-j", "rule", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    assert {(r["priority"], r.get("src"), str(r.get("table"))) for r in rules} >= {(5000, POD, "1234")}
    assert net.set_rules(OWNER, ip_rules(state)) is False

    # The service goes: the map empties, the pod leaves with its own address again, the rule goes.
    assert nft.set_table(OWNER, nft_table(NodeState(), mgmt_port=MGMT)) is True
    assert net.set_rules(OWNER, ip_rules(NodeState())) is True
    assert source_seen(topology) == POD
    listing = subprocess.run(["ip", "netns", "exec", topology["host"], "nft", "list", "table", "inet",
                              "ovnk-egressservice"], capture_output=True, text=True, check=True).stdout
    assert "egress-services" in listing and INGRESS not in listing
