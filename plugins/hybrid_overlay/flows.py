"""The OpenFlow of ``br-ext``, as pure functions (ovn-kubernetes.md §6.5, upstream's ``ho_node_linux.go``).

``br-ext`` (``fail_mode=secure``) holds the patch port ``ext`` (peer ``int`` on
``br-int``, ``iface-id=int-<node>``: the DR port of the node switch) and the
VXLAN port ``ext-vxlan`` (``remote_ip=flow``, ``key=flow``). Ports are named
in the flows; ``ovs-ofctl`` resolves them on every write, so a port that comes
back with another number after an ovs-vswitchd restart needs no other flows.
Local facts: node subnet ``S``, DR IP ``D`` and MAC ``M``, management port IP
and MAC, the subnet's gateway MAC (``rtos-<node>``, ``G``) and the gateway
router's join IP ``J``.

=====  ========  =================================================  =============================================
table  priority  match                                              actions
=====  ========  =================================================  =============================================
0-20   0         (anything else)                                    drop
0      100       ``in_port=ext, arp, arp_op=1, arp_tpa=D``          ARP reply ``D is-at M``
0      100       ``in_port=ext-vxlan, ip, nw_dst=S, dl_dst=M``      ``goto_table:10`` (foreign -> local pods)
0      10        ``in_port=ext-vxlan, arp, arp_op=1, arp_tpa=S``    ``resubmit(,2)``
2      100       ``in_port=ext-vxlan, arp, arp_op=1, arp_tpa=S``    ARP reply ``<S address> is-at M`` back through
                                                                    the tunnel it came from (VNI 4097)
10     100       ``ip, nw_dst=<local pod IP>``                      ``eth_src=M, eth_dst=<pod MAC>, output:ext``
10     100       ``ip, nw_dst=<mgmt IP>``                           ``eth_src=M, eth_dst=<mgmt MAC>, output:ext``
10     100       ``ip, nw_dst=D``                                   ``nw_dst=J, eth_src=M, eth_dst=G, output:ext``
                                                                    (replies to what the GR sent, below)
10     10        ``ip, nw_dst=S``                                   ``eth_src=M, eth_dst=0a:58:<IP>, output:ext``
                                                                    (a pod not known here yet: core's MAC rule)
=====  ========  =================================================  =============================================

Per foreign node ``F`` (subnet ``SF``, VXLAN endpoint ``IF``, MAC ``MF``), with
a cookie of its own (:func:`remote_flows`, owner ``hybrid_overlay.<node>``):

=====  ========  =================================================  =============================================
0      100       ``in_port=ext, arp, arp_op=1, arp_tpa=SF``         ARP reply ``<SF address> is-at MF``
0      100       ``ip, nw_dst=SF``                                  ``tun_id=4097, tun_dst=IF, eth_dst=MF,
                                                                    output:ext-vxlan``
0      101       ``ip, nw_dst=SF, nw_src=J``                        the same, and ``nw_src=D`` (the foreign node
                                                                    answers the GR through this node)
=====  ========  =================================================  =============================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ovnk.plugins.hybrid_overlay.models import VNI

BRIDGE = "br-ext"
PATCH_EXT = "ext"
PATCH_INT = "int"
VXLAN_PORT = "ext-vxlan"
TABLES = (0, 1, 2, 10, 20)


def _hex_mac(mac: str) -> str:
    return "0x" + mac.replace(":", "")


def _hex_ip(ip: ipaddress.IPv4Address) -> str:
    return f"{int(ip):#010x}"


def _arp_reply(*, mac: str, answer_ip: ipaddress.IPv4Address | None) -> str:
    """Actions turning an ARP request into the reply ``<target> is-at <mac>`` (``answer_ip``: a fixed
    target address; ``None``: whatever address was asked for)."""
    actions = ["move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]", f"mod_dl_src:{mac}", "load:0x2->NXM_OF_ARP_OP[]",
               "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]", f"load:{_hex_mac(mac)}->NXM_NX_ARP_SHA[]"]
    if answer_ip is None:
        actions += ["move:NXM_OF_ARP_TPA[]->NXM_NX_REG0[]", "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]",
                    "move:NXM_NX_REG0[]->NXM_OF_ARP_SPA[]"]
    else:
        actions += ["move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]", f"load:{_hex_ip(answer_ip)}->NXM_OF_ARP_SPA[]"]
    return ",".join(actions)


@dataclass(frozen=True)
class LocalFacts:
    """What this node's flows are built from (the module docstring's ``S``, ``D``, ``M``...)."""

    subnet: ipaddress.IPv4Network
    dr_ip: ipaddress.IPv4Address
    dr_mac: str
    mgmt_ip: ipaddress.IPv4Address
    mgmt_mac: str
    gateway_mac: str
    gr_join_ip: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class LocalPod:
    ip: ipaddress.IPv4Address
    mac: str


@dataclass(frozen=True)
class Remote:
    """A foreign node this node tunnels to."""

    name: str
    subnet: ipaddress.IPv4Network
    address: ipaddress.IPv4Address
    dr_mac: str


def default_flows() -> list[str]:
    """The drop at the end of every table (counters show where a packet stopped)."""
    return [f"table={table},priority=0 actions=drop" for table in TABLES]


def local_flows(facts: LocalFacts, pods: Iterable[LocalPod]) -> list[str]:
    """The node's own flows: ARP for the DR IP, tunnel traffic in, dispatch to local pods and the host."""
    s, m = facts.subnet, facts.dr_mac
    flows = [
        *default_flows(),
        f"table=0,priority=100,in_port={PATCH_EXT},arp,arp_op=1,arp_tpa={facts.dr_ip} "
        f"actions={_arp_reply(mac=m, answer_ip=facts.dr_ip)},IN_PORT",
        f"table=0,priority=100,in_port={VXLAN_PORT},ip,nw_dst={s},dl_dst={m} actions=goto_table:10",
        f"table=0,priority=10,in_port={VXLAN_PORT},arp,arp_op=1,arp_tpa={s} actions=resubmit(,2)",
        f"table=2,priority=100,in_port={VXLAN_PORT},arp,arp_op=1,arp_tpa={s} "
        f"actions=move:NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[],load:{VNI}->NXM_NX_TUN_ID[0..31],"
        f"{_arp_reply(mac=m, answer_ip=None)},IN_PORT",
        f"table=10,priority=100,ip,nw_dst={facts.mgmt_ip} "
        f"actions=mod_dl_src:{m},mod_dl_dst:{facts.mgmt_mac},output:{PATCH_EXT}",
    ]
    if facts.gr_join_ip is not None:
        flows.append(f"table=10,priority=100,ip,nw_dst={facts.dr_ip} actions=mod_nw_dst:{facts.gr_join_ip},"
                     f"mod_dl_src:{m},mod_dl_dst:{facts.gateway_mac},output:{PATCH_EXT}")
    # A pod the agent has not seen yet (its flow below comes with the next reconcile) still gets its
    # packets: core derives a pod's MAC from its IP (0a:58:<IP>) unless the pod asks for another one.
    flows.append(f"table=10,priority=10,ip,nw_dst={s} actions=mod_dl_src:{m},load:0xa58->NXM_OF_ETH_DST[32..47],"
                 f"move:NXM_OF_IP_DST[]->NXM_OF_ETH_DST[0..31],output:{PATCH_EXT}")
    for pod in sorted(pods, key=lambda p: p.ip):
        if pod.ip in s and pod.ip not in (facts.mgmt_ip, facts.dr_ip):
            flows.append(f"table=10,priority=100,ip,nw_dst={pod.ip} "
                         f"actions=set_field:{m}->eth_src,set_field:{pod.mac}->eth_dst,output:{PATCH_EXT}")
    return flows


def remote_flows(remote: Remote, *, dr_ip: ipaddress.IPv4Address, gr_join_ip: ipaddress.IPv4Address | None) -> list[str]:
    """The flows towards one foreign node (its own cookie)."""
    tunnel = (f"load:{VNI}->NXM_NX_TUN_ID[0..31],set_field:{remote.address}->tun_dst,"
              f"set_field:{remote.dr_mac}->eth_dst,output:{VXLAN_PORT}")
    flows = [
        f"table=0,priority=100,in_port={PATCH_EXT},arp,arp_op=1,arp_tpa={remote.subnet} "
        f"actions={_arp_reply(mac=remote.dr_mac, answer_ip=None)},IN_PORT",
        f"table=0,priority=100,ip,nw_dst={remote.subnet} actions={tunnel}",
    ]
    if gr_join_ip is not None:
        flows.append(f"table=0,priority=101,ip,nw_dst={remote.subnet},nw_src={gr_join_ip} "
                     f"actions=set_field:{dr_ip}->nw_src,{tunnel}")
    return flows
