"""Core plugin: Kubernetes NetworkPolicy as OVN port groups, ACLs and shared address sets.

The scheme is ovn-kubernetes' (ovn-kubernetes.md §5): per-namespace
default-deny port groups per direction, a port group per policy with its
``allow-related`` ACLs, peers as address sets shared by every policy using
the same selector, the hairpin and node management-IP allow ACLs and ACL
logging per namespace. Modules: :mod:`.models` (parse and validate, no I/O),
:mod:`.nb` (row intents, pure), :mod:`.selection` (cache queries and watch
keys), :mod:`.controller` (reconcilers and repair).

Owner types claimed: ``NetpolNamespace`` (Port_Group, ACL), ``NetworkPolicy``
(Port_Group, ACL), ``PodSelector`` (Address_Set), ``NetpolDefault`` (ACL,
Meter, Meter_Band) and ``NetpolNode`` (ACL).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ovnk.core.builtin.netpol import controller as ctl
from ovnk.core.builtin.netpol import nb
from ovnk.core.builtin.netpol import selection as sel
from ovnk.core.claims import Claims
from ovnk.core.context import ControllerContext
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.ovn.txn import NbTxn
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import PeriodicTask
from ovnk.core.reconcile.spec import Watch
from ovnk.core.topology.intents import PodPort


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    # k8s.ovn.org/acl-logging is only read (EgressFirewall reads it too), so it is not claimed.
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)


class NetpolControllers:
    """The controllers and the selection state they share."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.selection = sel.Selection(ctx)
        # Orders policy commits (which create the peer sets they name) against set deletions.
        lock = threading.Lock()
        # Keys waiting for pods' LSPs are woken by the LSP's NB row: no Kubernetes event follows it.
        self.arrivals = ctl.PortArrivals(ctx.enqueue)
        ctx.nb.add_row_listener(self.arrivals.on_row)
        self.policies = ctl.PolicyController(ctx, self.selection, lock, self.arrivals)
        self.address_sets = ctl.AddressSetController(ctx, self.selection, lock)
        self.namespaces = ctl.NetpolNamespaceController(ctx, self.selection, self.arrivals)
        self.cluster = ctl.ClusterController(ctx, self.selection)

    def specs(self) -> list[ControllerSpec]:
        s = self.selection
        return [
            ControllerSpec(name="netpol-cluster", watches=(), reconcile=self.cluster.reconcile,
                           initial_keys=lambda: [ctl.CLUSTER_KEY], workers=1),
            ControllerSpec(name=ctl.POLICIES, reconcile=self.policies.reconcile,
                           extra={"programming_kind": "networkpolicy"},
                           watches=(
                Watch(NETWORKPOLICIES, needs_update=sel.spec_changed),
                Watch(PODS, keys=s.policy_keys_for_pod, needs_update=sel.pod_changed),
                Watch(NAMESPACES, keys=s.policy_keys_for_namespace, needs_update=sel.logging_changed),
            )),
            ControllerSpec(name="netpol-address-sets", reconcile=self.address_sets.reconcile, watches=(
                Watch(NETWORKPOLICIES, keys=s.peer_keys_for_policy, needs_update=sel.spec_changed),
                Watch(PODS, keys=s.peer_keys_for_pod, needs_update=sel.pod_changed),
                Watch(NAMESPACES, keys=s.peer_keys_for_namespace, needs_update=sel.labels_changed),
            )),
            ControllerSpec(name=ctl.NAMESPACES, reconcile=self.namespaces.reconcile, watches=(
                Watch(NAMESPACES, needs_update=sel.logging_changed),
                Watch(NETWORKPOLICIES, keys=s.namespace_key_for_policy, needs_update=sel.spec_changed),
                Watch(PODS, keys=s.namespace_keys_for_pod, needs_update=sel.pod_changed),
            )),
        ]


class NetpolPlugin:
    """The runtime half of this plugin (registered by ``ovnk_configure``)."""

    def __init__(self) -> None:
        self.controllers: NetpolControllers | None = None

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        self.controllers = NetpolControllers(ctx)
        return self.controllers.specs()

    @hookimpl
    def ovnk_controller_tasks(self, ctx: ControllerContext) -> list[PeriodicTask]:
        assert self.controllers is not None
        return [PeriodicTask(name="netpol-port-sweep", interval=ctl.MISSING_PORT_SWEEP,
                             run=self.controllers.arrivals.sweep)]

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controllers is not None
        ctl.plan_stale(ctx, self.controllers.selection, plan)

    @hookimpl
    def ovnk_pod_txn(self, ctx: ControllerContext, txn: NbTxn, pod: Mapping[str, Any], lsp: PodPort | None,
                     deleted: bool) -> None:
        # A new pod's port joins the policy and default-deny groups that select it, and its IPs the
        # peer sets that select it, in the pod's own transaction: it is isolated, and admitted by the
        # policies that admit it, from its first packet, without waiting for those controllers' next
        # pass (which then finds nothing to write). The controllers still own the groups and sets:
        # they create them, remove members and correct anything missed here.
        if deleted or lsp is None or self.controllers is None:
            return
        port = [Ref(Match.of("Logical_Switch_Port", name=lsp.name))]
        for group in ctl.port_groups_selecting(self.controllers.selection, ctx.config.controller.name, pod):
            txn.add_to(Match.of("Port_Group", name=group), "ports", port, if_exists=True)
        if lsp.ips:
            self.controllers.address_sets.add_pod_early(txn, pod, lsp.ips)


@hookimpl
def ovnk_configure(pluginmanager: OvnkPluginManager) -> None:
    pluginmanager.register_runtime("core.netpol", NetpolPlugin())


@hookimpl
def ovnk_node_txn(ctx: ControllerContext, txn: NbTxn, node: Mapping[str, Any], deleted: bool) -> None:
    ctl.node_txn(ctx, txn, node, deleted)


@hookimpl
def ovnk_trace_explain(table: str, external_ids: Mapping[str, str]) -> str | None:
    return nb.explain_acl(external_ids) if table == "ACL" else None
