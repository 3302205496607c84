"""EgressFirewall's reconcilers: a namespace's ACLs and status, and the DNS names' address sets.

* ``egressfirewall`` (key ``<ns>/<name>``): one transaction per object with the
  ACL of every rule (:mod:`.nb`) on the namespace's port group, the DNS sets its
  rules name (created empty; the next controller fills them) and the removal of
  ACLs of rules that are gone; then ``status``. An invalid object (or one not
  named ``default``) gets the error in its status and an event, and its
  namespace keeps the rules it had: a typo never opens or closes traffic.
* ``egressfirewall-dns`` (key: a DNS name): resolves the name when it is due
  (:mod:`.dns`), writes the addresses into the name's sets, and plans its own
  next run after the TTL (``ctx.enqueue(..., after=)``). A set is deleted only
  when no valid object names it and no ACL in NB refers to it.

``sets_lock`` orders the commits that make a rule refer to a DNS set against
the deletion of unreferenced sets, so no ACL ever names a set that is gone
(northd would drop such an ACL: a deny rule would stop denying).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NAMESPACES
from ovnk import NODES
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import Match
from ovnk import Parent
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import TemporaryError
from ovnk import Watch
from ovnk import names
from ovnk import split_key
from ovnk.names import IPAddress
from ovnk.plugins.egressfirewall import nb
from ovnk.plugins.egressfirewall.dns import DnsClient
from ovnk.plugins.egressfirewall.dns import NameState
from ovnk.plugins.egressfirewall.metrics import EgressFirewallMetrics
from ovnk.plugins.egressfirewall.models import OBJECT_NAME
from ovnk.plugins.egressfirewall.models import EgressFirewallError
from ovnk.plugins.egressfirewall.models import EgressFirewallModel
from ovnk.plugins.egressfirewall.models import parse_acl_logging
from ovnk.plugins.egressfirewall.selection import EGRESSFIREWALLS
from ovnk.plugins.egressfirewall.selection import Selection
from ovnk.plugins.egressfirewall.selection import logging_changed
from ovnk.plugins.egressfirewall.selection import node_addresses
from ovnk.plugins.egressfirewall.selection import node_changed
from ovnk.plugins.egressfirewall.selection import spec_changed
from ovnk.plugins.egressfirewall.settings import EgressFirewallSettings
from ovnk.plugins.egressfirewall.settings import parse_server

logger = logging.getLogger(__name__)

FIREWALLS = "egressfirewall"
DNS = "egressfirewall-dns"
APPLIED = "EgressFirewall Rules applied"
NOT_APPLIED = "EgressFirewall Rules not correctly applied"
#: Upstream prefixes each message with the OVN zone that wrote it; one central NB is its "global" zone.
ZONE = "global"
PORT_GROUP_RETRY = 0.5


def refers_to(match: str, set_name: str) -> bool:
    """Whether an ACL match names address set ``set_name`` (``$a12`` is not ``$a123``)."""
    return re.search(rf"\${re.escape(set_name)}(?![0-9A-Za-z_])", match) is not None


def applied_status(problems: Mapping[str, str]) -> dict[str, Any]:
    """``status`` of an object whose rules are in NB; ``problems``: DNS name -> why it may not match."""
    return {"status": APPLIED,
            "messages": [f"{ZONE}: {APPLIED}", *(f"{ZONE}: dnsName {n} {p}" for n, p in sorted(problems.items()))]}


def error_status(error: str) -> dict[str, Any]:
    return {"status": NOT_APPLIED, "messages": [f"{ZONE}: {NOT_APPLIED}: {error}"]}


class EgressFirewallControllers:
    """Both reconcilers and repair (one instance per controller process)."""

    def __init__(self, ctx: ControllerContext, settings: EgressFirewallSettings,
                 metrics: EgressFirewallMetrics | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.metrics = metrics
        self.controller = ctx.controller_name
        self.selection = Selection(ctx)
        self.cluster_subnets = [s.network for s in ctx.config.default.cluster_subnets]
        self.families: list[int] = sorted({s.version for s in self.cluster_subnets})
        self.tier = ctx.nb.has_column("ACL", "tier")
        self.sets_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.names: dict[str, NameState] = {}
        self.programmed: dict[str, frozenset[str]] = {}  # namespace -> DNS names its ACLs refer to
        self.applied: dict[str, int] = {}  # namespace -> rules applied (metrics)
        self.client = DnsClient(servers=[parse_server(s) for s in settings.dns_servers],
                                timeout=settings.dns_timeout, queries_per_second=settings.dns_queries_per_second)

    def specs(self) -> list[ControllerSpec]:
        s = self.selection
        return [
            ControllerSpec(name=FIREWALLS, reconcile=self.reconcile_firewall, watches=(
                Watch(EGRESSFIREWALLS, needs_update=spec_changed),
                Watch(NODES, keys=s.keys_for_node, needs_update=node_changed),
                Watch(NAMESPACES, keys=s.keys_for_namespace, needs_update=logging_changed),
            )),
            ControllerSpec(name=DNS, reconcile=self.reconcile_name, workers=self.settings.dns_workers, watches=(
                Watch(EGRESSFIREWALLS, keys=s.dns_names_of, needs_update=spec_changed),
            )),
        ]

    # -- one object ------------------------------------------------------------------------

    def reconcile_firewall(self, req: ReconcileRequest) -> None:
        namespace, name = split_key(req.key)
        namespace = namespace or ""
        obj = self.selection.firewalls.get(req.key)
        if obj is None:
            self.selection.forget(req.key)
            if name == OBJECT_NAME:
                self._remove(namespace)
            return
        model = self.selection.parsed(obj)
        if isinstance(model, EgressFirewallError):
            # Rows of an earlier valid version stay: a broken edit neither opens nor closes traffic.
            self._set_status(obj, error_status(str(model)), reason="InvalidEgressFirewall")
            return
        self._program(model)
        with self.state_lock:
            problems = {n: self.names[n].problem or "" for n in model.dns_names
                        if n in self.names and self.names[n].problem}
        self._set_status(obj, applied_status(problems), reason="DNSNameResolutionFailed")

    def desired_acls(self, model: EgressFirewallModel, port_group: str) -> list[nb.AclRow]:
        namespace_obj = self.selection.namespaces.get(model.namespace)
        logging_levels = parse_acl_logging(ann.annotations_of(namespace_obj or {}).get(ann.ACL_LOGGING))
        acls = []
        for rule in model.rules:
            node_ips: list[IPAddress] = []
            if rule.node_selector is not None:
                for node in self.selection.selected_nodes(rule.node_selector):
                    node_ips.extend(node_addresses(node))
            dns_sets = ({v: nb.dns_address_set(self.controller, rule.dns_name, v)[0] for v in self.families}
                        if rule.dns_name is not None else {})
            acl = nb.rule_acl(rule, controller=self.controller, namespace=model.namespace, port_group=port_group,
                              cluster_subnets=self.cluster_subnets, dns_sets=dns_sets, node_ips=node_ips,
                              logging=logging_levels)
            if acl is not None:
                acls.append(acl)
        return acls

    def _program(self, model: EgressFirewallModel) -> None:
        namespace = model.namespace
        pg_name, _ = names.namespace_port_group(self.controller, namespace)
        if self.ctx.nb.get("Port_Group", name=pg_name) is None:
            raise TemporaryError(f"namespace {namespace} has no port group yet", delay=PORT_GROUP_RETRY)
        acls = self.desired_acls(model, pg_name)
        wanted = {acl.ids.primary_id for acl in acls}
        stale = [row for row in self.ctx.nb.owned_by_name(nb.ACL, namespace) if row.primary_id not in wanted]
        parent = Parent(Match.of("Port_Group", name=pg_name), "acls")
        with self.sets_lock:
            with self.ctx.nb.transaction(reason=f"EgressFirewall {namespace}", owner="EgressFirewall") as txn:
                for dns_name in sorted(model.dns_names):
                    for version in self.families:
                        set_name, set_ids = nb.dns_address_set(self.controller, dns_name, version)
                        txn.ensure("Address_Set", name=set_name, ids=set_ids)
                for acl in acls:
                    txn.ensure("ACL", ids=acl.ids, columns=acl.columns(tier=self.tier), parent=parent)
                for row in stale:
                    # Dropped from the port group, the (non-root) ACL row is deleted by the server.
                    txn.remove("ACL", uuid=row.uuid, parent=parent)
        if txn.outcome == "committed":
            logger.info("EgressFirewall %s: %d rule(s) applied, %d removed", namespace, len(acls), len(stale))
        self._programmed(namespace, model.dns_names, rules=len(model.rules))

    def _remove(self, namespace: str) -> None:
        rows = self.ctx.nb.owned_by_name(nb.ACL, namespace)
        if rows:
            pg_name, _ = names.namespace_port_group(self.controller, namespace)
            parent = Parent(Match.of("Port_Group", name=pg_name), "acls")
            with self.ctx.nb.transaction(reason=f"EgressFirewall {namespace} deleted", owner="EgressFirewall") as txn:
                for row in rows:
                    txn.remove("ACL", uuid=row.uuid, parent=parent)
            logger.info("EgressFirewall %s deleted: %d rule(s) removed", namespace, len(rows))
        self._programmed(namespace, frozenset(), rules=None)

    def _programmed(self, namespace: str, dns_names: frozenset[str], *, rules: int | None) -> None:
        """Remember what the namespace's ACLs refer to now; names it stopped using are re-checked."""
        with self.state_lock:
            before = self.programmed.pop(namespace, frozenset())
            if dns_names:
                self.programmed[namespace] = dns_names
            if rules is None:
                self.applied.pop(namespace, None)
            else:
                self.applied[namespace] = rules
            firewalls, total = len(self.applied), sum(self.applied.values())
        for dns_name in sorted(before - dns_names):
            self.ctx.enqueue(DNS, dns_name)
        if self.metrics is not None:
            self.metrics.set_counts(firewalls=firewalls, rules=total)

    def _set_status(self, obj: Mapping[str, Any], status: dict[str, Any], *, reason: str) -> None:
        """Write ``status`` where it differs; each new problem message is also an event and a log line."""
        current = obj.get("status") or {}
        if current.get("status") == status["status"] and current.get("messages") == status["messages"]:
            return
        meta = obj["metadata"]
        for message in status["messages"]:
            if message not in (current.get("messages") or ()) and not message.endswith(f": {APPLIED}"):
                logger.warning("EgressFirewall %s/%s: %s", meta["namespace"], meta["name"], message)
                self.ctx.events.event(obj, type="Warning", reason=reason, message=message.removeprefix(f"{ZONE}: "))
        self.ctx.kube.patch(EGRESSFIREWALLS, meta["name"], {"status": status}, namespace=meta["namespace"],
                            subresource="status")

    # -- one DNS name --------------------------------------------------------------------------

    def reconcile_name(self, req: ReconcileRequest) -> None:
        name = req.key
        users = self.selection.users_of(name)
        if not users:
            self._release_name(name)
            return
        with self.state_lock:
            state = self.names.get(name)
        if state is None:
            state = self._new_name_state(name)
        now = time.monotonic()
        if now >= state.due:
            self._resolve(name, state, now=now, users=users)
        elif state.planned <= now:
            # Queued by an object change: the planned re-check was lost (a restart), plan it again.
            state.planned = state.due
            self.ctx.enqueue(DNS, name, after=state.due - now)
        with self.sets_lock:
            with self.ctx.nb.transaction(reason=f"EgressFirewall DNS {name}", owner="EgressFirewallDNS") as txn:
                for version in self.families:
                    set_name, set_ids = nb.dns_address_set(self.controller, name, version)
                    txn.ensure("Address_Set", name=set_name, ids=set_ids, columns={"addresses": nb.dns_addresses(
                        state.addresses, version=version, cluster_subnets=self.cluster_subnets)})
        if txn.outcome == "committed":
            logger.info("DNS name %s: %s", name, ", ".join(map(str, state.addresses)) or "no address")
        if self.metrics is not None:
            with self.state_lock:
                self.metrics.dns_names.set(len(self.names))

    def _new_name_state(self, name: str) -> NameState:
        """A name seen for the first time by this process starts from what its sets hold in NB: after a
        controller restart, a first resolution that fails must keep the last answer, not empty the sets."""
        held: set[IPAddress] = set()
        for version in self.families:
            row = self.ctx.nb.get("Address_Set", name=nb.dns_address_set(self.controller, name, version)[0],
                                  columns=("addresses",))
            if row is not None:
                held.update(ipaddress.ip_address(str(a)) for a in row["addresses"])
        fresh = NameState(addresses=tuple(sorted(held, key=lambda ip: (ip.version, ip))), answered=bool(held))
        with self.state_lock:
            return self.names.setdefault(name, fresh)

    def _resolve(self, name: str, state: NameState, *, now: float, users: list[str]) -> None:
        started = time.monotonic()
        answer = self.client.resolve(name, versions=self.families)
        if self.metrics is not None:
            self.metrics.dns_resolution.observe(time.monotonic() - started)
            if answer.failure is not None:
                self.metrics.dns_failures.labels(reason=answer.failure).inc()
        problem_before = state.problem
        with self.state_lock:
            interval = state.record(answer, now=time.monotonic(), min_interval=self.settings.dns_min_interval,
                                    max_backoff=self.settings.dns_max_backoff)
            state.planned = state.due
        self.ctx.enqueue(DNS, name, after=interval)
        if answer.failure is not None:
            logger.info("DNS name %s: %s; asking again in %.0fs", name, answer.detail, interval)
        if state.problem != problem_before:
            for key in users:  # their status names the problem (or stops naming it)
                self.ctx.enqueue(FIREWALLS, key)

    def _release_name(self, name: str) -> None:
        """Delete the name's sets once nothing refers to them (no object, no ACL in NB)."""
        set_names = [nb.dns_address_set(self.controller, name, v)[0] for v in self.families]
        with self.sets_lock:
            if self.selection.users_of(name):
                return  # an object started using it meanwhile; its commit made the set exist
            referring = [row for row in self.ctx.nb.owned(nb.ACL, columns=("match",))
                         if any(refers_to(str(row["match"]), s) for s in set_names)]
            if referring:
                # A namespace whose object became invalid keeps its old rules, and with them this set.
                logger.debug("DNS name %s: still named by %d ACL(s)", name, len(referring))
                return
            with self.ctx.nb.transaction(reason=f"EgressFirewall DNS {name} unused", owner="EgressFirewallDNS") as txn:
                for set_name in set_names:
                    txn.remove("Address_Set", name=set_name)
        with self.state_lock:
            self.names.pop(name, None)
            count = len(self.names)
        if self.metrics is not None:
            self.metrics.dns_names.set(count)

    # -- repair ------------------------------------------------------------------------------------

    def plan_repair(self, plan: RepairPlan) -> None:
        """ACLs of namespaces without an EgressFirewall, DNS sets nothing refers to.

        Every object's key is reconciled right after, which removes the ACLs of
        rules that are gone and fills the sets.
        """
        objects = {key.split("/", 1)[0] for key in self.selection.firewalls.keys() if key.endswith(f"/{OBJECT_NAME}")}
        kept: list[str] = []
        for row in self.ctx.nb.owned(nb.ACL, columns=("match",)):
            namespace = row.external_ids.get("k8s.ovn.org/name", "")
            if namespace in objects:
                kept.append(str(row["match"]))
            else:
                plan.stale(row, reason=f"namespace {namespace} has no EgressFirewall")
        used = {n for m in self.selection.models() for n in m.dns_names}
        for row in self.ctx.nb.owned(nb.DNS_SET):
            dns_name = row.external_ids.get("k8s.ovn.org/name", "")
            if dns_name not in used and not any(refers_to(match, str(row.name)) for match in kept):
                plan.stale(row, reason=f"no EgressFirewall names {dns_name}")
