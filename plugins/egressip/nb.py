"""The NB rows of EgressIP, as pure functions of what is selected and where the IPs are held.

Names, priorities, matches and ``external_ids`` are ovn-kubernetes' (ovn-kubernetes.md §6.1):

==========================  ==================  ================================================
row                         where               what
==========================  ==================  ================================================
reroute policy (per pod     ovn_cluster_router  priority 100, ``ip4.src == <pod IP>``, reroute to
and IP family)                                  the GR join IP of every node holding one of the
                                                object's IPs of that family (ECMP)
SNAT (per pod, egress IP)   GR_<egress node>    ``snat``, ``external_ip`` = the egress IP,
                                                ``logical_ip`` = the pod IP, ``logical_port`` =
                                                ``k8s-<egress node>``
``egressip-served-pods``    Address_Set         the IPs of every served pod
pod-to-node no-reroute      ovn_cluster_router  priority 102, ``ip4.src == $egressip-served-pods
                                                && ip4.dst == $node-ips`` allow (``pkt_mark=1008``)
==========================  ==================  ================================================

The other priority-102 policies and ``node-ips`` are shared with EgressService
(:mod:`ovnk.egress`). Upstream writes one pod-to-node policy naming both
features' sets; here each feature writes its own, so either works alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk import DbObjectIds
from ovnk import OwnerType
from ovnk import egress
from ovnk import names
from ovnk.names import IPAddress
from ovnk.names import IPNetwork

REROUTE_POLICY = OwnerType(name="EgressIP", table="Logical_Router_Policy",
                           keys=("name", "priority", "ip-family", "network"))
SNAT = OwnerType(name="EgressIP", table="NAT", keys=("name", "ip-family"))
SERVED_PODS_SET = OwnerType(name="EgressIP", table="Address_Set", keys=("name", "network", "ip-family"))
REPLY_MARK_QOS = OwnerType(name="EgressIP", table="QoS", keys=("name", "priority", "ip-family", "network"))

OWNER_TYPES = (REROUTE_POLICY, SNAT, SERVED_PODS_SET, REPLY_MARK_QOS)

SERVED_PODS = "egressip-served-pods"
POD_TO_NODE = "EIP-No-Reroute-Pod-To-Node"
#: ``pkt_mark`` of pod to node traffic (upstream's breth0 flows SNAT it to the node IP).
POD_TO_NODE_MARK = 1008
REPLY_MARK = "EgressIP-Mark-Reply-Traffic"
REPLY_MARK_PRIORITY = 103


@dataclass(frozen=True)
class ServedPod:
    """A pod an EgressIP serves: its key and its IPs."""

    namespace: str
    name: str
    ips: tuple[IPAddress, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class EgressHop:
    """One egress node holding an IP of the object: its gateway router and where to reach it."""

    node: str
    egress_ip: IPAddress
    join_ip: IPAddress


@dataclass(frozen=True)
class Row:
    """A desired row: identity, table, complete columns, and the router whose column references it.

    ``where`` finds the row among the router's rows when ``ids`` is not unique
    (an object's SNATs of one pod on several gateway routers share their ids,
    as upstream's do).
    """

    ids: DbObjectIds
    columns: Mapping[str, object]
    router: str
    router_column: str
    where: Mapping[str, object] | None = None

    @property
    def table(self) -> str:
        return self.ids.owner.table

    @property
    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """What tells two rows of the same ids apart (their ``where`` values)."""
        return (self.table, self.ids.primary_id, tuple(sorted((k, str(v)) for k, v in (self.where or {}).items())))


def family(ip: IPAddress) -> str:
    return egress.family_name(ip.version)


def object_pod_name(eip: str, pod: ServedPod) -> str:
    """``k8s.ovn.org/name`` of a pod's rows: ``<egressip>_<ns>/<pod>``."""
    return f"{eip}_{pod.key}"


def egressip_of(name: str) -> str:
    """The EgressIP a row belongs to, from its ``k8s.ovn.org/name``."""
    return name.split("_", 1)[0]


def object_rows(*, controller: str, eip: str, pods: Iterable[ServedPod], hops: Sequence[EgressHop]) -> list[Row]:
    """Every reroute policy and SNAT of one EgressIP."""
    rows: list[Row] = []
    for pod in pods:
        name = object_pod_name(eip, pod)
        for ip in pod.ips:
            fam = family(ip)
            same = [h for h in hops if h.egress_ip.version == ip.version]
            if not same:
                continue
            ids = REROUTE_POLICY.ids(controller, name=name, priority=names.EGRESS_IP_REROUTE_PRIORITY,
                                     ip_family=fam, network=names.DEFAULT_NETWORK)
            rows.append(Row(ids=ids, router=names.CLUSTER_ROUTER, router_column="policies", columns={
                "priority": names.EGRESS_IP_REROUTE_PRIORITY, "action": "reroute",
                "match": f"{fam}.src == {ip}",
                "nexthops": sorted({str(h.join_ip) for h in same}),
            }))
            for hop in same:
                nat_ids = SNAT.ids(controller, name=name, ip_family=fam)
                where = {"external_ip": str(hop.egress_ip), "logical_ip": str(ip)}
                rows.append(Row(ids=nat_ids, router=names.gateway_router(hop.node), router_column="nat",
                                where=where, columns={
                                    "type": "snat", **where, "logical_port": [names.mgmt_port(hop.node)],
                                }))
    return rows


def served_pods_set(controller: str, version: int) -> tuple[str, DbObjectIds]:
    """(name, ids) of ``egressip-served-pods`` for one IP family."""
    oids = SERVED_PODS_SET.ids(controller, name=SERVED_PODS, network=names.DEFAULT_NETWORK,
                               ip_family=egress.family_name(version))
    return oids.hashed_name, oids


def pod_to_node_policy(controller: str, version: int) -> Row:
    """This feature's priority-102 pod-to-node policy of one IP family."""
    fam = egress.family_name(version)
    served, _ = served_pods_set(controller, version)
    node_ips, _ = egress.node_ips_set(controller, version)
    ids = REROUTE_POLICY.ids(controller, name=POD_TO_NODE, priority=names.DEFAULT_NO_REROUTE_PRIORITY,
                             ip_family=fam, network=names.DEFAULT_NETWORK)
    return Row(ids=ids, router=names.CLUSTER_ROUTER, router_column="policies", columns={
        "priority": names.DEFAULT_NO_REROUTE_PRIORITY, "action": "allow",
        "match": f"{fam}.src == ${served} && {fam}.dst == ${node_ips}",
        "options": {"pkt_mark": str(POD_TO_NODE_MARK)},
    })


def reply_mark_qos(controller: str, version: int, *,
                   internal: Sequence[IPNetwork]) -> tuple[DbObjectIds, dict[str, object]]:
    """(ids, columns) of the QoS rule marking replies of served pods (``pkt.mark == 42`` is not
    rerouted): one row per family, referenced by every node switch.

    Replies to ``internal`` destinations (the cluster and join subnets) are left unmarked: the
    Pod-To-Pod and Pod-To-Join policies never reroute them anyway, and a marked packet that then
    crosses a Geneve tunnel is dropped by OVS's userspace datapath (its tunnel route lookup is keyed
    by the packet mark and the host's routes exist for mark 0 only; OVS 3.5 with OVN >= 24.09,
    which always sets the tunnel's ``local_ip``).
    """
    fam = egress.family_name(version)
    served, _ = served_pods_set(controller, version)
    ids = REPLY_MARK_QOS.ids(controller, name=REPLY_MARK, priority=REPLY_MARK_PRIORITY, ip_family=fam,
                             network=names.DEFAULT_NETWORK)
    nets = sorted(str(net) for net in internal if net.version == version)
    match = f"{fam}.src == ${served} && ct.trk && ct.rpl"
    if nets:
        match += f" && {fam}.dst != {{{', '.join(nets)}}}"
    return ids, {"priority": REPLY_MARK_PRIORITY, "direction": "from-lport", "match": match,
                 "action": {"mark": egress.REPLY_TRAFFIC_MARK}}
