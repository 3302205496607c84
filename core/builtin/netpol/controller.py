"""NetworkPolicy reconcilers: one NB transaction per key, each computed from the caches.

* ``netpol-policies`` (key ``ns/name``): the policy's port group (selected
  pods' LSPs) and its allow ACLs; it makes sure the peer address sets it
  names exist (their content is the next controller's).
* ``netpol-address-sets`` (key: the peer selector's canonical string): the
  shared ``PodSelector`` address sets, one per IP family, holding the IPs of
  the pods the selector matches; deleted when no policy references them.
* ``netpol-namespaces`` (key: namespace): the per-direction default-deny port
  groups with their drop and ARP/ND ACLs, present while some policy of the
  namespace has that policy type, holding every pod such a policy selects;
  the namespace's ``k8s.ovn.org/acl-logging`` sets their logging.
* ``netpol-cluster`` (singleton): the ``acl-logging`` meter and the hairpin
  allow ACLs on ``clusterPortGroup``. The node management-IP ACLs are written
  in each node's own transaction (``ovnk_node_txn``).

Each port-group membership has a single writer (the key that owns the
group), which reads the pods from the cache and the group's current ports from
NB. A new pod's transaction also adds its port to the groups that select it
then (``port_groups_selecting``); a pass that meets a pod whose IPs are annotated
but whose LSP is not committed yet (the pod reconcile writes the annotation
first) waits for that LSP's NB row (:class:`PortArrivals`): no Kubernetes event
follows the LSP commit.

A policy reconcile also creates missing peer address sets so its ACLs never
name a set that does not exist; ``lock`` orders those commits against the
deletion of unreferenced sets, so a set is never deleted while a policy
version that names it is being written.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk.core.builtin import common
from ovnk.core.builtin.netpol import nb
from ovnk.core.builtin.netpol.models import DIRECTIONS
from ovnk.core.builtin.netpol.models import EGRESS
from ovnk.core.builtin.netpol.models import INGRESS
from ovnk.core.builtin.netpol.models import NetworkPolicyModel
from ovnk.core.builtin.netpol.models import PeerSelector
from ovnk.core.builtin.netpol.models import PolicyError
from ovnk.core.builtin.netpol.models import parse_acl_logging
from ovnk.core.builtin.netpol.selection import PeerShare
from ovnk.core.builtin.netpol.selection import Selection
from ovnk.core.builtin.netpol.selection import labels_of
from ovnk.core.builtin.netpol.selection import lsp_name
from ovnk.core.builtin.netpol.selection import share_changes
from ovnk.core.builtin.netpol.selection import shares_union
from ovnk.core.context import ControllerContext
from ovnk.core.errors import PermanentError
from ovnk.core.errors import TemporaryError
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import split_key
from ovnk.core.ovn import datums
from ovnk.core.ovn import indexes
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.commands import find_one
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.ovn.txn import NbTxn
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import builder
from ovnk.core.topology import naming as n
from ovnk.core.topology.naming import IPAddress

logger = logging.getLogger(__name__)

CLUSTER_KEY = "cluster"
POLICIES = "netpol-policies"
NAMESPACES = "netpol-namespaces"
#: A key that waits for pods' LSPs is woken by their NB rows (PortArrivals), and only when a port
#: appears outside a group the key wants it in: normally the pod's own transaction put it there.
#: A sweep every MISSING_PORT_SWEEP seconds re-queues a key none of whose ports appeared for
#: MISSING_PORT_RECHECK seconds, for a wake-up lost in a reconnect or a pod that never gets its
#: port. A key that waits for nothing, or whose ports keep appearing, is not re-run by it: a timer
#: per waiting key is keys x duration in a bulk start.
MISSING_PORT_RECHECK = 10.0
MISSING_PORT_SWEEP = 2.0

#: (controller, key): a netpol key in a controller's queue.
Waiter = tuple[str, str]


def _in_group(port: Any, group: str) -> bool:
    """Whether port group ``group`` holds ``port`` (an LSP row of the same IDL), in O(1)."""
    row = find_one(port._idl, Match.of("Port_Group", name=group))
    return row is not None and datums.contains(row, "ports", port)


class PortArrivals:
    """The netpol keys waiting for pods' logical switch ports, woken when a port's NB row appears
    outside a port group the key wants it in.

    Kubernetes sends no event when a pod's LSP is committed, so a pass that finds selected pods
    without a port registers them here, with the groups it wants each in (under the NB connection
    lock, in the same read that found them missing, so no creation can slip between the two). The
    NB row listener sees the port's creation with its whole transaction applied: when the pod's
    transaction already put the port in those groups (``port_groups_selecting``), there is nothing
    left to do; when it could not (a group did not exist yet), the key is queued at once. A bulk start
    thus costs no pass per port, and nothing proportional to keys x duration.
    """

    def __init__(self, enqueue: Callable[[str, str], None], *, clock: Callable[[], float] = time.monotonic,
                 in_group: Callable[[Any, str], bool] = _in_group) -> None:
        self._enqueue = enqueue
        self._clock = clock
        self._in_group = in_group
        self._lock = threading.Lock()
        self._waiting: dict[str, set[Waiter]] = {}  # LSP name -> keys waiting for it
        self._awaited: dict[Waiter, dict[str, tuple[str, ...]]] = {}  # key -> {LSP name: groups wanting it}
        self._since: dict[Waiter, float] = {}  # key -> its last pass or its last port's arrival

    def await_ports(self, controller: str, key: str, missing: Mapping[str, Iterable[str]]) -> None:
        """Make ``missing`` ({LSP name: port groups that want it}) what ``key`` waits for (empty: nothing)."""
        waiter = (controller, key)
        with self._lock:
            for name in self._awaited.pop(waiter, {}).keys() - missing.keys():
                keys = self._waiting.get(name)
                if keys is not None:
                    keys.discard(waiter)
                    if not keys:
                        del self._waiting[name]
            if missing:
                self._awaited[waiter] = {name: tuple(groups) for name, groups in missing.items()}
                self._since[waiter] = self._clock()
                for name in missing:
                    self._waiting.setdefault(name, set()).add(waiter)
            else:
                self._since.pop(waiter, None)

    def waiting(self) -> dict[Waiter, set[str]]:
        """A copy of the ports each key waits for (for tests and introspection)."""
        with self._lock:
            return {waiter: set(ports) for waiter, ports in self._awaited.items()}

    def on_row(self, event: str, row: Any, updates: Any = None) -> None:
        """NB row listener: runs on the connection thread with the lock held; reads a few rows, queues keys."""
        if event != "create" or row._table.name != "Logical_Switch_Port":
            return
        name = getattr(row, "name", None)
        if not isinstance(name, str):
            return
        wake: list[Waiter] = []
        with self._lock:
            for waiter in self._waiting.pop(name, ()):
                ports = self._awaited.get(waiter)
                if ports is None or name not in ports:
                    continue
                groups = ports.pop(name)
                if ports:
                    self._since[waiter] = self._clock()  # progress: the re-check is for a key that is stuck
                else:
                    del self._awaited[waiter]
                    self._since.pop(waiter, None)
                if not all(self._in_group(row, group) for group in groups):
                    wake.append(waiter)
        self._wake(wake)

    def sweep(self) -> None:
        """Re-queue the keys that have waited ``MISSING_PORT_RECHECK`` seconds since their last pass or the
        last arrival of one of their ports."""
        now = self._clock()
        with self._lock:
            due = sorted(waiter for waiter, since in self._since.items() if now - since >= MISSING_PORT_RECHECK)
            for waiter in due:
                self._since[waiter] = now  # not again before that pass has had its time
        self._wake(due)

    def _wake(self, waiters: Iterable[Waiter]) -> None:
        for controller, key in waiters:
            try:
                self._enqueue(controller, key)
            except KeyError:
                pass  # that controller stopped (this process lost the lease)


class _Base:
    #: The runner name of the controller (the key space PortArrivals wakes).
    name = ""

    def __init__(self, ctx: ControllerContext, selection: Selection, arrivals: PortArrivals | None = None) -> None:
        self.ctx = ctx
        self.sel = selection
        self.arrivals = arrivals
        self.controller = ctx.config.controller.name
        self.families = sorted({s.network.version for s in ctx.config.default.cluster_subnets})
        self.hairpin_ip = n.hairpin_ip(ctx.config.gateway.v4_masquerade_subnet) if 4 in self.families else None
        self.tier = ctx.nb.has_column("ACL", "tier")

    def _ensure_acls(self, txn: NbTxn, acls: Iterable[nb.AclIntent], parent: Parent) -> None:
        for acl in acls:
            txn.ensure("ACL", ids=acl.ids, columns=acl.columns(tier=self.tier), parent=parent)

    def _port_group_members(self, key: str, wanted_by_group: Mapping[str, set[str]],
                            ) -> tuple[dict[str, set[str]], set[str]]:
        """(current LSP names of each port group, the wanted LSPs that exist), in one NB read;
        ``key`` then waits for the wanted LSPs that do not exist (:class:`PortArrivals`)."""
        wanted_names = set().union(*wanted_by_group.values()) if wanted_by_group else set()

        def read(idl: Any) -> tuple[dict[str, set[str]], set[str]]:
            current = {group: _port_names(idl, find_one(idl, Match.of("Port_Group", name=group)))
                       for group in wanted_by_group}
            # A group's ports exist (the server drops a deleted port from every group in the same
            # transaction): only the wanted ports outside every group need a lookup. Every pod event
            # re-plans its namespace's groups, and looking up each member made that O(namespace) under
            # the lock the IDL thread needs.
            members = set().union(*current.values()) if current else set()
            existing = {name for name in wanted_names
                        if name in members or find_one(idl, Match.of("Logical_Switch_Port", name=name)) is not None}
            if self.arrivals is not None:
                missing = {name: [group for group, wanted in wanted_by_group.items() if name in wanted]
                           for name in wanted_names - existing}
                self.arrivals.await_ports(self.name, key, missing)
            return current, existing

        result: tuple[dict[str, set[str]], set[str]] = self.ctx.nb.reader.read(read)
        return result

    @staticmethod
    def _set_members(txn: NbTxn, group: str, *, current: set[str], wanted: set[str], existing: set[str]) -> None:
        """Add the wanted LSPs that exist, remove every other member (only the difference is written)."""
        match = Match.of("Port_Group", name=group)
        add = sorted((wanted & existing) - current)
        remove = sorted(current - wanted)
        if add:
            txn.add_to(match, "ports", [Ref(Match.of("Logical_Switch_Port", name=name)) for name in add])
        if remove:
            txn.remove_from(match, "ports", [Ref(Match.of("Logical_Switch_Port", name=name)) for name in remove])

    def _forget_waits(self, key: str) -> None:
        if self.arrivals is not None:
            self.arrivals.await_ports(self.name, key, {})


def port_groups_selecting(sel: Selection, controller: str, pod: Mapping[str, Any]) -> list[str]:
    """The policy port groups and default-deny port groups whose selectors take ``pod`` now (the
    groups PolicyController and NetpolNamespaceController would put its port in)."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    labels = labels_of(pod)
    groups: list[str] = []
    isolated: set[str] = set()
    for obj in sel.policies.by_index("namespace", namespace):
        scope = sel.scope(obj)
        if scope is None or not scope.pod_selector.matches(labels):
            continue
        isolated.update(direction for direction in DIRECTIONS if scope.isolates(direction))
        try:
            model = sel.model(obj)
        except PolicyError:
            continue  # an invalid policy's group is left as its last valid version made it
        groups.append(nb.policy_port_group(controller, model.namespace, model.name)[0])
    groups.extend(nb.default_deny_port_group(controller, namespace, d)[0] for d in DIRECTIONS if d in isolated)
    return groups


def _port_names(idl: Any, group: Any) -> set[str]:
    """The names of a port group's ports, read from the IDL's data (no Row conversion of the set)."""
    if group is None or group._data is None:
        return set()
    datum = group._data.get("ports")
    if datum is None:
        return set()
    rows = idl.tables["Logical_Switch_Port"].rows
    names = set()
    for atom in datum.values:
        port = rows.get(atom.value)
        name = indexes.name_key(port) if port is not None else None
        if name is not None:
            names.add(str(name[0]))
    return names


class PolicyController(_Base):
    """A policy's port group and allow ACLs (key ``ns/name``)."""

    name = POLICIES

    def __init__(self, ctx: ControllerContext, selection: Selection, lock: threading.Lock,
                 arrivals: PortArrivals | None = None) -> None:
        super().__init__(ctx, selection, arrivals)
        self.lock = lock

    def reconcile(self, req: ReconcileRequest) -> None:
        obj = self.sel.policies.get(req.key)
        if obj is None:
            namespace, name = split_key(req.key)
            self.sel.forget(req.key)
            self.delete(namespace or "", name)
            self._forget_waits(req.key)
            return
        try:
            model = self.sel.model(obj)
        except PolicyError as exc:
            message = f"NetworkPolicy {req.key} is invalid and was not (re)programmed: {exc}"
            logger.warning("%s", message)
            self.ctx.events.event(obj, type="Warning", reason="InvalidNetworkPolicy", message=message)
            # The pods it selects stay isolated (netpol-namespaces); rules of an earlier valid
            # version stay in place rather than opening or closing traffic by surprise.
            raise PermanentError(message) from exc
        self.sync(model, source=obj)

    def sync(self, model: NetworkPolicyModel, *, source: Mapping[str, Any] | None = None) -> str:
        """Write the policy's port group and ACLs in one transaction; returns the commit outcome.

        ``source`` is the cached object the model came from: if the cache has moved on by the
        time of the commit, nothing is written (the newer version is queued already).
        """
        pg_name, pg_ids = nb.policy_port_group(self.controller, model.namespace, model.name)
        selected = [(pod, ips) for pod, ips in self.sel.pods_with_ips(model.namespace)
                    if model.pod_selector.matches(labels_of(pod))]
        acls = nb.policy_acls(model, controller=self.controller, port_group=pg_name, families=self.families,
                              hairpin_ip=self.hairpin_ip, logging=self.sel.namespace_logging(model.namespace),
                              named_targets=self._named_port_targets(model, selected))
        wanted = {lsp_name(pod) for pod, _ in selected}
        current, existing = self._port_group_members(model.key, {pg_name: wanted})
        desired_ids = {acl.ids.primary_id for acl in acls}
        stale = [row for row in self.ctx.nb.owned_by_name(nb.NETWORK_POLICY_ACL, f"{model.namespace}:{model.name}")
                 if row.primary_id not in desired_ids]
        peer_keys = sorted({s.key for s in model.peer_selectors()})
        with self.lock:
            if source is not None and self.sel.policies.get(model.key) is not source:
                logger.debug("NetworkPolicy %s changed while reconciling; the new version is queued", model.key)
                return "superseded"
            with self.ctx.nb.transaction(reason=f"NetworkPolicy {model.key}", owner="NetworkPolicy") as txn:
                for key in peer_keys:
                    for family in self.families:
                        as_name, as_ids = nb.peer_address_set(self.controller, key, family)
                        txn.ensure("Address_Set", name=as_name, ids=as_ids)
                txn.ensure("Port_Group", name=pg_name, ids=pg_ids)
                parent = Parent(Match.of("Port_Group", name=pg_name), "acls")
                self._ensure_acls(txn, acls, parent)
                for row in stale:
                    # Dropped from its port group, the (non-root) ACL row is deleted by the server.
                    txn.remove("ACL", uuid=row.uuid, parent=parent)
                self._set_members(txn, pg_name, current=current[pg_name], wanted=wanted, existing=existing)
        return str(txn.outcome)

    def delete(self, namespace: str, name: str) -> None:
        pg_name, _ = nb.policy_port_group(self.controller, namespace, name)
        with self.ctx.nb.transaction(reason=f"NetworkPolicy {namespace}/{name} deleted", owner="NetworkPolicy") as txn:
            # Its ACLs are referenced by the port group only: the server deletes them with it.
            txn.remove("Port_Group", name=pg_name)

    def _named_port_targets(self, model: NetworkPolicyModel, selected: list[tuple[Mapping[str, Any], tuple[Any, ...]]],
                            ) -> dict[tuple[str, int], list[nb.NamedPortTarget]]:
        """Named ports resolved on the pods they name: the selected pods (ingress) or the rule's peers (egress)."""
        targets: dict[tuple[str, int], list[nb.NamedPortTarget]] = {}
        for direction in DIRECTIONS:
            for rule in model.rules(direction):
                named = rule.named_ports
                if not named:
                    continue
                if direction == INGRESS:
                    candidates = selected
                elif rule.selectors:
                    candidates = [item for s in rule.selectors for item in self.sel.peer_pods(s)]
                else:
                    candidates = [(pod, ips) for namespace in self.sel.namespaces.keys()
                                  for pod, ips in self.sel.pods_with_ips(namespace)]
                found: set[nb.NamedPortTarget] = set()
                for pod, ips in candidates:
                    for container in (pod.get("spec") or {}).get("containers") or ():
                        for port in container.get("ports") or ():
                            protocol = str(port.get("protocol") or "TCP").lower()
                            for wanted in named:
                                if port.get("name") == wanted.port and protocol == wanted.protocol:
                                    found.update(nb.NamedPortTarget(protocol, ip, int(port["containerPort"]))
                                                 for ip in ips if ip.version in self.families)
                targets[(direction, rule.index)] = sorted(found, key=lambda t: (t.protocol, int(t.ip), t.port))
        return targets


class NetpolNamespaceController(_Base):
    """Default-deny port groups and ACLs of one namespace (key: namespace name)."""

    name = NAMESPACES

    def __init__(self, ctx: ControllerContext, selection: Selection, arrivals: PortArrivals | None = None) -> None:
        super().__init__(ctx, selection, arrivals)
        self._reported: dict[str, str] = {}  # namespace -> invalid annotation already reported

    def reconcile(self, req: ReconcileRequest) -> None:
        namespace = req.key
        ns_obj = self.sel.namespaces.get(namespace)
        scopes = self.sel.scopes(namespace) if ns_obj is not None else []
        logging_levels = self.sel.namespace_logging(namespace)
        if ns_obj is not None:
            self._check_logging(ns_obj)
        else:
            self._reported.pop(namespace, None)
        pods = self.sel.pods_with_ips(namespace) if scopes else []
        groups = {d: nb.default_deny_port_group(self.controller, namespace, d) for d in DIRECTIONS}
        wanted: dict[str, set[str]] = {}
        for direction in DIRECTIONS:
            isolating = [s for s in scopes if s.isolates(direction)]
            if isolating:
                wanted[direction] = {lsp_name(pod) for pod, _ in pods
                                     if any(s.pod_selector.matches(labels_of(pod)) for s in isolating)}
        current, existing = self._port_group_members(namespace, {groups[d][0]: wanted[d] for d in wanted})
        with self.ctx.nb.transaction(reason=f"namespace {namespace} default deny", owner="NetpolNamespace") as txn:
            for direction in DIRECTIONS:
                pg_name, pg_ids = groups[direction]
                if direction not in wanted:
                    txn.remove("Port_Group", name=pg_name)
                    continue
                txn.ensure("Port_Group", name=pg_name, ids=pg_ids)
                self._ensure_acls(txn, nb.default_deny_acls(self.controller, namespace, direction, pg_name,
                                                            logging_levels),
                                  Parent(Match.of("Port_Group", name=pg_name), "acls"))
                self._set_members(txn, pg_name, current=current[pg_name], wanted=wanted[direction],
                                  existing=existing)

    def _check_logging(self, ns_obj: Mapping[str, Any]) -> None:
        """Report an invalid logging annotation once per value (this runs on every pod change)."""
        name = ns_obj["metadata"]["name"]
        raw = ann.annotations_of(ns_obj).get(ann.ACL_LOGGING) or ""
        try:
            parse_acl_logging(raw)
        except PolicyError as exc:
            if self._reported.get(name) != raw:
                self._reported[name] = raw
                logger.warning("namespace %s: %s; ACL logging is off", name, exc)
                self.ctx.events.event(ns_obj, type="Warning", reason="InvalidAclLogging",
                                      message=f"{exc}; logging is off")
            return
        self._reported.pop(name, None)


@dataclass(frozen=True)
class _WrittenPeer:
    """What a peer's address sets held after this controller's last commit for them."""

    shares: Mapping[str, PeerShare]  # the namespace shares they were made of
    counts: Mapping[str, int]  # address-set name -> how many addresses it held
    reconnects: int  # the NB client's reconnect count then (a new session may bring another database)


@dataclass(frozen=True)
class _SetObservation:
    """A peer address set as read before an incremental pass."""

    exists: bool
    count: int  # addresses it holds
    added: int  # of the addresses to add, how many it holds already (a pod transaction added them)
    still_there: int  # of the addresses to remove, how many it still holds

    def explained_by(self, written: int | None, add: set[str], remove: set[str]) -> bool:
        """Whether the set is what our last commit left (``written`` addresses), give or take the
        pending changes someone else applied early: else something else changed it."""
        if written is None or not self.exists:
            return False
        return self.count == written + self.added - (len(remove) - self.still_there)


class AddressSetController(_Base):
    """Shared peer address sets (key: the selector's canonical string)."""

    def __init__(self, ctx: ControllerContext, selection: Selection, lock: threading.Lock) -> None:
        super().__init__(ctx, selection)
        self.lock = lock
        self._written: dict[str, _WrittenPeer] = {}

    def reconcile(self, req: ReconcileRequest) -> None:
        key = req.key
        # Taken out while reconciling: if anything below fails, the next pass compares whole sets.
        written = self._written.pop(key, None)
        selector = self.sel.peer_selector(key)
        if selector is None:
            with self.lock:
                if self.sel.peer_selector(key) is None:
                    self.sel.forget_peer(key)
                    with self.ctx.nb.transaction(reason=f"address set {key} unreferenced", owner="PodSelector") as txn:
                        for family in self.families:
                            txn.remove("Address_Set", name=nb.peer_address_set(self.controller, key, family)[0])
                    return
            selector = self.sel.peer_selector(key)
            if selector is None:
                return
        shares = self.sel.peer_shares(selector, self.families)
        sets = {family: nb.peer_address_set(self.controller, key, family) for family in self.families}
        names: dict[int, str] = {family: name for family, (name, _) in sets.items()}
        reconnects = self.ctx.nb.client.reconnects
        changes: dict[int, tuple[set[str], set[str]]] | None = None
        if written is not None and written.reconnects == reconnects:
            # Only namespaces whose pods changed are looked at: a namespace-selecting peer holds a
            # share of every pod of the cluster, and comparing the whole set on each pod event there
            # made a cold start quadratic. That holds while the sets are what the last commit left,
            # plus what pod transactions added early (add_pod_early): checked by the sets' sizes.
            delta: dict[int, tuple[set[str], set[str]]] = {
                family: share_changes(written.shares, shares, family) for family in self.families}
            observed = self._observe({names[family]: change for family, change in delta.items()})
            if all(observed[names[f]].explained_by(written.counts.get(names[f]), *delta[f]) for f in self.families):
                changes = delta
        if changes is None:
            # First pass, a failed one before, a new NB session or a set changed by someone else:
            # compare with what the sets hold.
            current = self._current_addresses(list(names.values()))
            changes = {}
            for version, as_name in names.items():
                wanted = shares_union(shares, version)
                have = current.get(as_name, set())
                changes[version] = (wanted - have, have - wanted)
        kept: dict[int, set[str]] = {}
        for version, (add, remove) in changes.items():
            kept[version] = {address for address in remove if self._being_annotated(address, selector)}
            changes[version] = (add, remove - kept[version])
        with self.ctx.nb.transaction(reason=f"address set {key}", owner="PodSelector") as txn:
            for family, (as_name, as_ids) in sets.items():
                txn.ensure("Address_Set", name=as_name, ids=as_ids)
                # Only the difference is planned and written (SetMembership).
                match = Match.of("Address_Set", name=as_name, primary_id=as_ids.primary_id)
                add, remove = changes[family]
                if add:
                    txn.add_to(match, "addresses", sorted(add))
                if remove:
                    txn.remove_from(match, "addresses", sorted(remove))
        if any(kept.values()):
            # Not remembered: the next pass (the pod's annotation or deletion queues one) compares whole
            # sets and decides about what was kept.
            return
        # The sets now hold the union of the shares. Its size is taken as the sum of theirs: were an IP
        # briefly in two namespaces' shares, the next pass finds another size and compares whole sets.
        after = {as_name: sum(len(share[1][version]) for share in shares.values()) for version, as_name in names.items()}
        self._written[key] = _WrittenPeer(shares=shares, counts=after, reconnects=reconnects)

    def _being_annotated(self, address: str, selector: PeerSelector) -> bool:
        """Whether ``address`` was just given to a pod ``selector`` takes whose annotation the pod cache
        does not show yet. Its pod transaction added it early (add_pod_early): removing it until the
        watch catches up would only flap the pod's admission."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an address we would have written
        holder = next((pool.holder(ip) for _node, pool in self.ctx.topology.all_pools() if ip in pool.subnet), None)
        if holder is None:
            return False
        pod = self.sel.pods.get(holder.rsplit(" ", 1)[0])
        if pod is None or common.ip_holder(pod) != holder or ip in ann.pod_ips(pod):
            return False
        namespace = str(pod["metadata"]["namespace"])
        return selector.selects_namespace(namespace, self.sel.namespace_labels(namespace) or {}) \
            and selector.selects_pod(labels_of(pod))

    def add_pod_early(self, txn: NbTxn, pod: Mapping[str, Any], ips: Iterable[IPAddress]) -> None:
        """Add a new pod's ``ips`` to the existing peer sets that select it, in the pod's transaction."""
        by_family = {family: sorted(str(ip) for ip in ips if ip.version == family) for family in self.families}
        for key in self.sel.peer_keys_for_pod(pod):
            for family, addresses in by_family.items():
                if addresses:
                    as_name, as_ids = nb.peer_address_set(self.controller, key, family)
                    txn.add_to(Match.of("Address_Set", name=as_name, primary_id=as_ids.primary_id), "addresses",
                               addresses, if_exists=True)

    def _observe(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> dict[str, _SetObservation]:
        """Each named set's size and how many of the addresses to add and to remove it holds, in one
        read under the NB lock: O(changes), not O(set)."""

        def read(idl: Any) -> dict[str, _SetObservation]:
            result = {}
            for name, (add, remove) in changes.items():
                row = find_one(idl, Match.of("Address_Set", name=name))
                datum = datums.current_datum(row, "addresses") if row is not None else None
                if datum is None:
                    result[name] = _SetObservation(exists=False, count=0, added=0, still_there=0)
                    continue
                result[name] = _SetObservation(
                    exists=True, count=len(datum.values),
                    added=sum(1 for address in add if datums.contains(row, "addresses", address)),
                    still_there=sum(1 for address in remove if datums.contains(row, "addresses", address)))
            return result

        found: dict[str, _SetObservation] = self.ctx.nb.reader.read(read)
        return found

    def _current_addresses(self, names: list[str]) -> dict[str, set[str]]:
        """The addresses each named set holds now (read straight from the IDL's datum: cheap)."""

        def read(idl: Any) -> dict[str, set[str]]:
            result = {}
            for name in names:
                row = find_one(idl, Match.of("Address_Set", name=name))
                if row is not None:
                    datum = row._data.get("addresses") if row._data is not None else None
                    result[name] = {atom.value for atom in datum.values} if datum is not None else set()
            return result

        found: dict[str, set[str]] = self.ctx.nb.reader.read(read)
        return found


class ClusterController(_Base):
    """The ACL-logging meter and the hairpin allow ACLs (singleton key)."""

    def reconcile(self, req: ReconcileRequest) -> None:
        if not self.ctx.topology.cluster_ready.is_set():
            raise TemporaryError("cluster topology not written yet", delay=0.2)
        acls = nb.hairpin_acls(self.controller, self.hairpin_ip) if self.hairpin_ip is not None else []
        desired = {acl.ids.primary_id for acl in acls}
        stale = [row for row in self.ctx.nb.owned(nb.NETPOL_DEFAULT_ACL) if row.primary_id not in desired]
        cluster_pg = builder.port_group_name(self.controller, n.CLUSTER_PORT_GROUP)
        band_ids = nb.meter_band_ids(self.controller)
        with self.ctx.nb.transaction(reason="netpol cluster defaults", owner="NetpolDefault") as txn:
            txn.ensure("Meter_Band", ids=band_ids, columns=nb.METER_BAND_COLUMNS)
            txn.ensure("Meter", name=nb.METER_NAME, ids=nb.meter_ids(self.controller),
                       columns={**nb.METER_COLUMNS, "bands": [Ref(Match.of("Meter_Band", primary_id=band_ids.primary_id))]})
            self._ensure_acls(txn, acls, Parent(Match.of("Port_Group", name=cluster_pg), "acls"))
            for row in stale:
                txn.remove("ACL", uuid=row.uuid)


def node_txn(ctx: ControllerContext, txn: NbTxn, node: Mapping[str, Any], deleted: bool) -> None:
    """The node's management-IP allow ACL, in the node's own transaction (its switch is written there)."""
    controller = ctx.config.controller.name
    name = str(node["metadata"]["name"])
    mgmt_ips = [] if deleted else [n.mgmt_ip(s) for s in ctx.topology.subnets.subnets_of(name)]
    acls = nb.node_acls(controller, name, mgmt_ips)
    desired = {acl.ids.primary_id for acl in acls}
    for row in ctx.nb.owned_by_name(nb.NETPOL_NODE_ACL, name):
        if row.primary_id not in desired:
            txn.remove("ACL", uuid=row.uuid)
    tier = ctx.nb.has_column("ACL", "tier")
    parent = Parent(Match.of("Logical_Switch", name=n.node_switch(name)), "acls")
    for acl in acls:
        txn.ensure("ACL", ids=acl.ids, columns=acl.columns(tier=tier), parent=parent)


def plan_stale(ctx: ControllerContext, selection: Selection, plan: RepairPlan) -> None:
    """Rows of vanished policies, namespaces without policies, unreferenced sets, gone nodes."""
    policies = {f"{obj['metadata']['namespace']}:{obj['metadata']['name']}" for obj in selection.policies.list()}
    for owner in (nb.NETWORK_POLICY_PG, nb.NETWORK_POLICY_ACL):
        for row in ctx.nb.owned(owner):
            name = row.external_ids.get("k8s.ovn.org/name", "")
            if name not in policies:
                plan.stale(row, reason=f"NetworkPolicy {name.replace(':', '/', 1)} no longer exists")
    directions: dict[str, set[str]] = {}
    for obj in selection.policies.list():
        scope = selection.scope(obj)
        if scope is not None:
            wanted = directions.setdefault(scope.namespace, set())
            wanted.update(d for d in (INGRESS, EGRESS) if scope.isolates(d))
    for owner in (nb.NETPOL_NAMESPACE_PG, nb.NETPOL_NAMESPACE_ACL):
        for row in ctx.nb.owned(owner):
            namespace = row.external_ids.get("k8s.ovn.org/name", "")
            direction = row.external_ids.get("direction", "")
            if direction not in directions.get(namespace, set()):
                plan.stale(row, reason=f"namespace {namespace} has no {direction} NetworkPolicy")
    referenced = set(selection.peer_keys())
    for row in ctx.nb.owned(nb.POD_SELECTOR_AS):
        key = row.external_ids.get("k8s.ovn.org/name", "")
        if key not in referenced:
            plan.stale(row, reason=f"no NetworkPolicy references peer {key}")
    nodes = set(ctx.cache(NODES).keys())
    for row in ctx.nb.owned(nb.NETPOL_NODE_ACL):
        node = row.external_ids.get("k8s.ovn.org/name", "")
        if node not in nodes:
            plan.stale(row, reason=f"node {node} no longer exists")
