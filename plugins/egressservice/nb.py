"""The NB rows of EgressService, as pure functions of the endpoints and the host node.

Names, priorities, matches and ``external_ids`` follow ovn-kubernetes
(ovn-kubernetes.md §6.2):

==========================  ==================  ================================================
row                         where               what
==========================  ==================  ================================================
reroute policy (per         ovn_cluster_router  priority 101, ``ip4.src == <endpoint IP>``,
endpoint IP)                                    reroute to the host node's management port IP;
                                                ``external_ids:EgressSVC=<ns>/<svc>``
``egresssvc-served-pods``   Address_Set         every endpoint IP that has a reroute policy
pod-to-node no-reroute      ovn_cluster_router  priority 102, ``ip4.src == $egresssvc-served-pods
                                                && ip4.dst == $node-ips`` allow
==========================  ==================  ================================================

The other priority-102 policies (pod to pod, pod to join, replies) and
``node-ips`` are shared with EgressIP (:mod:`ovnk.egress`). Priority 101 beats
EgressIP's 100, so a pod that both select leaves as the service's endpoint.
``sourceIPBy: Network`` services get no rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass

from ovnk import DbObjectIds
from ovnk import OwnerType
from ovnk import egress
from ovnk import names
from ovnk.names import IPAddress

#: Reroute and pod-to-node policies: ``name`` is ``<ns>/<svc>`` (or the pod-to-node policy's name),
#: ``ip`` the endpoint IP ("" for pod-to-node).
POLICY = OwnerType(name="EgressService", table="Logical_Router_Policy",
                   keys=("name", "priority", "ip-family", "ip"))
SERVED_PODS_SET = OwnerType(name="EgressService", table="Address_Set", keys=("name", "network", "ip-family"))

OWNER_TYPES = (POLICY, SERVED_PODS_SET)

SERVED_PODS = "egresssvc-served-pods"
POD_TO_NODE = "EgressSVC-No-Reroute-Pod-To-Node"
#: The upstream key naming the service on its policies.
SERVICE_KEY = "EgressSVC"


@dataclass(frozen=True)
class Row:
    """A desired policy: identity and complete columns (its parent is ``ovn_cluster_router``'s ``policies``)."""

    ids: DbObjectIds
    columns: Mapping[str, object]
    external_ids: Mapping[str, str]


def reroute_policies(*, controller: str, key: str, endpoint_ips: Iterable[IPAddress],
                     host_mgmt_ips: Iterable[IPAddress]) -> list[Row]:
    """One priority-101 policy per endpoint IP with a host management IP of its family."""
    by_family = {ip.version: ip for ip in host_mgmt_ips}
    rows = []
    for ip in endpoint_ips:
        nexthop = by_family.get(ip.version)
        if nexthop is None:
            continue
        fam = egress.family_name(ip.version)
        ids = POLICY.ids(controller, name=key, priority=names.EGRESS_SVC_REROUTE_PRIORITY, ip_family=fam,
                         ip=str(ip))
        rows.append(Row(ids=ids, external_ids={SERVICE_KEY: key}, columns={
            "priority": names.EGRESS_SVC_REROUTE_PRIORITY, "action": "reroute",
            "match": f"{fam}.src == {ip}", "nexthops": [str(nexthop)],
        }))
    return rows


def served_pods_set(controller: str, version: int) -> tuple[str, DbObjectIds]:
    """(name, ids) of ``egresssvc-served-pods`` for one IP family."""
    oids = SERVED_PODS_SET.ids(controller, name=SERVED_PODS, network=names.DEFAULT_NETWORK,
                               ip_family=egress.family_name(version))
    return oids.hashed_name, oids


def pod_to_node_policy(controller: str, version: int) -> Row:
    """This feature's priority-102 policy: served endpoints reach node IPs directly."""
    fam = egress.family_name(version)
    served, _ = served_pods_set(controller, version)
    node_ips, _ = egress.node_ips_set(controller, version)
    ids = POLICY.ids(controller, name=POD_TO_NODE, priority=names.DEFAULT_NO_REROUTE_PRIORITY, ip_family=fam,
                     ip="")
    return Row(ids=ids, external_ids={}, columns={
        "priority": names.DEFAULT_NO_REROUTE_PRIORITY, "action": "allow",
        "match": f"{fam}.src == ${served} && {fam}.dst == ${node_ips}",
    })


def service_of(row_name: str) -> str | None:
    """The ``<ns>/<svc>`` a policy belongs to (``None`` for the pod-to-node policy)."""
    return None if row_name == POD_TO_NODE else row_name
