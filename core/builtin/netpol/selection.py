"""Read-only queries over the shared caches: parsed policies, selected pods, peer IPs, watch keys.

Watch ``keys`` functions here run on informer threads for every event, so
they only look at the caches (and at parsed models cached per
resourceVersion) and never raise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ovnk.core.builtin import common
from ovnk.core.builtin.netpol.models import AclLogging
from ovnk.core.builtin.netpol.models import NetworkPolicyModel
from ovnk.core.builtin.netpol.models import PeerSelector
from ovnk.core.builtin.netpol.models import PolicyError
from ovnk.core.builtin.netpol.models import PolicyScope
from ovnk.core.builtin.netpol.models import parse_acl_logging
from ovnk.core.builtin.netpol.models import parse_policy
from ovnk.core.builtin.netpol.models import parse_scope
from ovnk.core.builtin.netpol.models import peer_selectors_lenient
from ovnk.core.context import ControllerContext
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import object_key
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import pod_ips
from ovnk.core.topology.naming import IPAddress

logger = logging.getLogger(__name__)

PEER_INDEX = "netpol-peer"
EGRESS_NAMED_PORT_INDEX = "netpol-egress-named-port"
NAMESPACE_SELECTOR_PEER_INDEX = "netpol-namespace-selector-peer"

#: A namespace's share of a peer's addresses: (the pod cache's stamp for the namespace when it was
#: evaluated, its addresses per IP version).
PeerShare = tuple[int, Mapping[int, frozenset[str]]]


def shares_union(shares: Mapping[str, PeerShare], family: int) -> set[str]:
    """Every address of ``family`` the shares hold: what the peer's address set must hold."""
    return set().union(*(share[1][family] for share in shares.values()))


def share_changes(old: Mapping[str, PeerShare], new: Mapping[str, PeerShare],
                  family: int) -> tuple[set[str], set[str]]:
    """(addresses to add, addresses to remove) that turn the union of ``old``'s shares into ``new``'s.

    Only namespaces whose share is a different object are compared (:meth:`Selection.peer_shares`
    returns an unchanged share as the same object), so the cost is the changed namespaces' pods and
    the changed addresses, not the whole set. An address gained in one namespace and lost in another
    (an IP handed to a pod elsewhere) is neither added nor removed.
    """
    gained: set[str] = set()
    lost: set[str] = set()
    for namespace in old.keys() | new.keys():
        before, after = old.get(namespace), new.get(namespace)
        if before is after:
            continue
        had = before[1][family] if before is not None else frozenset()
        has = after[1][family] if after is not None else frozenset()
        gained |= has - had
        lost |= had - has
    add = {address for address in gained if not any(address in share[1][family] for share in old.values())}
    remove = {address for address in lost if not any(address in share[1][family] for share in new.values())}
    return add, remove


def index_peers(obj: Mapping[str, Any]) -> Iterable[str]:
    """Policy store index: the peer address-set keys a policy references."""
    return tuple(s.key for s in peer_selectors_lenient(obj))


def index_namespace_selector_peers(obj: Mapping[str, Any]) -> Iterable[str]:
    """Policy store index: the keys of the policy's peers that select namespaces by label.

    Every other selector peer stays in the policy's own namespace, so a pod or namespace event
    only needs the policies of its namespace plus the *distinct* namespace-selecting peers (a
    few, however many policies share them), not every policy of the cluster.
    """
    return tuple({s.key for s in peer_selectors_lenient(obj) if s.namespace_selector is not None})


def index_egress_named_ports(obj: Mapping[str, Any]) -> Iterable[str]:
    """Policy store index: ``"yes"`` for policies whose egress rules use named ports."""
    try:
        return ("yes",) if parse_policy(obj).has_egress_named_ports else ()
    except PolicyError:
        return ()


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def lsp_name(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return n.pod_port(meta["namespace"], meta["name"])


def pod_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Pod changes that can move it in or out of a policy, a port group or an address set."""
    if common.changed(old, new, ("metadata.labels", "spec.nodeName", "spec.hostNetwork", "status.phase",
                                 "spec.containers")):
        return True
    return ann.annotations_of(old).get(ann.POD_NETWORKS) != ann.annotations_of(new).get(ann.POD_NETWORKS)


def spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return common.changed(old, new, ("spec",))


def labels_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return common.changed(old, new, ("metadata.labels",))


def logging_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return ann.annotations_of(old).get(ann.ACL_LOGGING) != ann.annotations_of(new).get(ann.ACL_LOGGING)


class Selection:
    """Queries over the pod, namespace and NetworkPolicy caches."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.policies = ctx.informers.informer(NETWORKPOLICIES, indexers={
            PEER_INDEX: index_peers, EGRESS_NAMED_PORT_INDEX: index_egress_named_ports,
            NAMESPACE_SELECTOR_PEER_INDEX: index_namespace_selector_peers,
        }).store
        self.pods = ctx.cache(PODS)
        self.namespaces = ctx.cache(NAMESPACES)
        self._lock = threading.Lock()
        self._models: dict[str, tuple[str, NetworkPolicyModel | PolicyError]] = {}
        self._scopes: dict[str, tuple[str, PolicyScope | None]] = {}
        self._selectors: dict[str, PeerSelector] = {}
        self._peers: dict[str, tuple[str, tuple[PeerSelector, ...]]] = {}
        # peer key -> namespace -> (the namespace's pod stamp, that namespace's share of the peer's
        # addresses per IP version): see peer_shares.
        self._peer_shares: dict[str, dict[str, PeerShare]] = {}

    # -- policies ---------------------------------------------------------------

    def model(self, obj: Mapping[str, Any]) -> NetworkPolicyModel:
        """The parsed policy (cached per resourceVersion); :class:`PolicyError` if invalid."""
        key = object_key(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            cached = self._models.get(key)
        if cached is None or cached[0] != version or not version:
            try:
                result: NetworkPolicyModel | PolicyError = parse_policy(obj)
            except PolicyError as exc:
                result = exc
            cached = (version, result)
            with self._lock:
                self._models[key] = cached
        if isinstance(cached[1], PolicyError):
            raise cached[1]
        return cached[1]

    def scope(self, obj: Mapping[str, Any]) -> PolicyScope | None:
        """Which pods the policy isolates; ``None`` when even its podSelector is invalid."""
        key = object_key(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            cached = self._scopes.get(key)
        if cached is None or cached[0] != version or not version:
            try:
                scope: PolicyScope | None = parse_scope(obj)
            except PolicyError:
                scope = None
            cached = (version, scope)
            with self._lock:
                self._scopes[key] = cached
        return cached[1]

    def forget(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._scopes.pop(key, None)
            self._peers.pop(key, None)

    def peer_selectors_of(self, obj: Mapping[str, Any]) -> tuple[PeerSelector, ...]:
        """The policy's selector peers, leniently parsed (cached per resourceVersion)."""
        key = object_key(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            cached = self._peers.get(key)
        if cached is None or cached[0] != version or not version:
            cached = (version, tuple(peer_selectors_lenient(obj)))
            with self._lock:
                self._peers[key] = cached
        return cached[1]

    def scopes(self, namespace: str) -> list[PolicyScope]:
        scopes = (self.scope(obj) for obj in self.policies.by_index("namespace", namespace))
        return [s for s in scopes if s is not None]

    # -- pods -------------------------------------------------------------------

    def pods_with_ips(self, namespace: str) -> list[tuple[Mapping[str, Any], tuple[IPAddress, ...]]]:
        """Pods of ``namespace`` that have a network and their IPs (pods not annotated yet are skipped)."""
        result = []
        for pod in self.pods.by_index("namespace", namespace):
            if not common.pod_wants_network(pod):
                continue
            ips = pod_ips(pod)
            if ips:
                result.append((pod, ips))
        return result

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        namespace = self.namespaces.get(name)
        return labels_of(namespace) if namespace is not None else None

    def namespace_logging(self, name: str) -> AclLogging:
        """The namespace's ACL logging levels; an invalid annotation counts as off (reported elsewhere)."""
        namespace = self.namespaces.get(name)
        raw = ann.annotations_of(namespace).get(ann.ACL_LOGGING) if namespace is not None else None
        try:
            return parse_acl_logging(raw)
        except PolicyError:
            return AclLogging()

    # -- peers -------------------------------------------------------------------

    def peer_selector(self, key: str) -> PeerSelector | None:
        """The selector of a peer address-set key, if any policy still references it."""
        referrers = self.policies.by_index(PEER_INDEX, key)
        if not referrers:
            return None
        with self._lock:
            known = self._selectors.get(key)
        if known is not None:
            return known
        for obj in referrers:
            for selector in peer_selectors_lenient(obj):
                if selector.key == key:
                    with self._lock:
                        self._selectors[key] = selector
                    return selector
        return None

    def peer_keys(self) -> list[str]:
        return self.policies.index_values(PEER_INDEX)

    def namespace_selecting_peers(self) -> list[PeerSelector]:
        """The distinct peers that select namespaces by label (their number does not grow with the
        policies that share them)."""
        selectors = []
        for key in self.policies.index_values(NAMESPACE_SELECTOR_PEER_INDEX):
            with self._lock:
                selector = self._selectors.get(key)
            if selector is None:
                selector = self.peer_selector(key)
            if selector is not None:
                selectors.append(selector)
        return selectors

    def namespaces_of(self, selector: PeerSelector) -> list[str]:
        if selector.namespace_selector is None:
            return [selector.namespace] if selector.namespace else []
        return [obj["metadata"]["name"] for obj in self.namespaces.list()
                if selector.namespace_selector.matches(labels_of(obj))]

    def peer_pods(self, selector: PeerSelector) -> list[tuple[Mapping[str, Any], tuple[IPAddress, ...]]]:
        result: list[tuple[Mapping[str, Any], tuple[IPAddress, ...]]] = []
        for namespace in self.namespaces_of(selector):
            result.extend((pod, ips) for pod, ips in self.pods_with_ips(namespace)
                          if selector.selects_pod(labels_of(pod)))
        return result

    def peer_shares(self, selector: PeerSelector, families: Iterable[int]) -> dict[str, PeerShare]:
        """Each selected namespace's share of the addresses ``selector`` takes, per IP version in ``families``.

        A share is kept with the pod cache's stamp for its namespace and returned as the very same
        object while no pod of the namespace changed, so a caller can tell unchanged namespaces by
        identity (:func:`share_changes`). A pod event therefore costs its own namespace's pods, not
        every pod of every namespace a namespace-selecting peer takes (a quarter of the cluster for a
        peer such as ``team: x``), which made a cold start quadratic in the pods.
        """
        families = tuple(families)
        namespaces = self.namespaces_of(selector)
        with self._lock:
            known = self._peer_shares.get(selector.key, {})
        shares: dict[str, PeerShare] = {}
        for namespace in namespaces:
            stamp = self.pods.changed_at("namespace", namespace)  # before the pods are read
            share = known.get(namespace)
            if share is None or share[0] != stamp or any(f not in share[1] for f in families):
                found: dict[int, set[str]] = {family: set() for family in families}
                for pod, ips in self.pods_with_ips(namespace):
                    if selector.selects_pod(labels_of(pod)):
                        for ip in ips:
                            if ip.version in found:
                                found[ip.version].add(str(ip))
                share = (stamp, {family: frozenset(ips) for family, ips in found.items()})
            shares[namespace] = share
        with self._lock:
            # Only the namespaces selected now are kept: a deleted or relabelled one drops out.
            self._peer_shares[selector.key] = shares
        return shares

    def peer_addresses(self, selector: PeerSelector, families: Iterable[int]) -> dict[int, set[str]]:
        """The addresses of the pods ``selector`` takes, per IP version in ``families`` (every share joined)."""
        families = tuple(families)
        shares = self.peer_shares(selector, families)
        return {family: shares_union(shares, family) for family in families}

    def forget_peer(self, key: str) -> None:
        """Drop what :meth:`peer_shares` keeps for a peer no policy references any more."""
        with self._lock:
            self._peer_shares.pop(key, None)

    # -- watch keys ------------------------------------------------------------------

    def policy_keys_for_pod(self, pod: Mapping[str, Any]) -> list[str]:
        """Policies selecting the pod, plus policies with egress named ports (the pod may be a target)."""
        namespace = (pod.get("metadata") or {}).get("namespace") or ""
        labels = labels_of(pod)
        keys = []
        for obj in self.policies.by_index("namespace", namespace):
            scope = self.scope(obj)
            if scope is not None and scope.pod_selector.matches(labels):
                keys.append(object_key(obj))
        if any(port.get("name") for c in (pod.get("spec") or {}).get("containers") or () for port in c.get("ports") or ()):
            keys.extend(object_key(obj) for obj in self.policies.by_index(EGRESS_NAMED_PORT_INDEX, "yes"))
        return keys

    def policy_keys_for_namespace(self, namespace: Mapping[str, Any]) -> list[str]:
        return self.policies.index_keys("namespace", (namespace.get("metadata") or {}).get("name") or "")

    def namespace_keys_for_pod(self, pod: Mapping[str, Any]) -> list[str]:
        namespace = (pod.get("metadata") or {}).get("namespace") or ""
        return [namespace] if self.policies.index_keys("namespace", namespace) else []

    @staticmethod
    def namespace_key_for_policy(policy: Mapping[str, Any]) -> list[str]:
        namespace = (policy.get("metadata") or {}).get("namespace")
        return [namespace] if namespace else []

    def peer_keys_for_pod(self, pod: Mapping[str, Any]) -> list[str]:
        """Peer address sets whose selector takes the pod, sorted.

        Only the policies of the pod's namespace and the distinct namespace-selecting peers can
        reference such a set, so the cost follows those, not the policies of the cluster.
        """
        metadata = pod.get("metadata") or {}
        namespace = metadata.get("namespace") or ""
        namespace_labels = self.namespace_labels(namespace) or {}
        labels = labels_of(pod)
        keys: set[str] = set()
        for obj in self.policies.by_index("namespace", namespace):
            for selector in self.peer_selectors_of(obj):
                if selector.namespace_selector is None and selector.key not in keys \
                        and selector.selects_namespace(namespace, namespace_labels) and selector.selects_pod(labels):
                    keys.add(selector.key)
        for selector in self.namespace_selecting_peers():
            if selector.selects_namespace(namespace, namespace_labels) and selector.selects_pod(labels):
                keys.add(selector.key)
        return sorted(keys)

    def peer_keys_for_namespace(self, namespace: Mapping[str, Any]) -> list[str]:
        """Address sets with a namespace selector matching ``namespace`` (static ones do not depend on labels)."""
        labels = labels_of(namespace)
        return sorted({s.key for s in self.namespace_selecting_peers()
                       if s.namespace_selector is not None and s.namespace_selector.matches(labels)})

    @staticmethod
    def peer_keys_for_policy(policy: Mapping[str, Any]) -> list[str]:
        return list(index_peers(policy))
