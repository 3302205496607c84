"""The hook specification: the whole contract between core and plugins.

Every feature beyond the core engines is a plugin implementing some of these
hooks, including core's own features (``ovnk.core.builtin``). The user-facing
description, with one section per hook and which planned plugin uses it, is
``docs/hooks.md``; a contract test keeps both in step.

Rules that hold for every hook:

* Call hooks with keyword arguments only (pluggy requires it).
* Hooks are synchronous and cheap; they do no I/O of their own. Long-running
  work is returned as objects (controllers, node managers) that core runs.
* Hooks that add commands to a transaction are atomic by design: if one raises,
  the whole transaction is dropped and the key is retried.
* A disabled plugin is never registered, so none of its hooks ever run.

Phases: bootstrap (every process), controller, node agent, CNI server.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import MutableMapping
from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk.cni.types import CniRequest
    from ovnk.cni.types import CniResult
    from ovnk.core.claims import Claims
    from ovnk.core.config import Config
    from ovnk.core.context import ControllerContext
    from ovnk.core.node.context import NodeContext
    from ovnk.core.node.context import NodeManager
    from ovnk.core.node.wiring import CniNetwork
    from ovnk.core.node.wiring import InterfaceDriver
    from ovnk.core.ovn.sync import RepairPlan
    from ovnk.core.ovn.txn import NbTxn
    from ovnk.core.plugins import OvnkPluginManager
    from ovnk.core.reconcile.spec import ControllerSpec
    from ovnk.core.reconcile.spec import PeriodicTask
    from ovnk.core.settings import SettingsRegistry
    from ovnk.core.topology.intents import ClusterTopology
    from ovnk.core.topology.intents import NodeTopology
    from ovnk.core.topology.intents import PodPort

PROJECT = "ovnk"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------
# Bootstrap: every process (controller, node agent, CLI)
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def ovnk_addhooks(pluginmanager: OvnkPluginManager) -> None:
    """Add hook specifications of a plugin (hooks other plugins may implement).

    Call ``pluginmanager.add_hookspecs(module)``. Plugin-published hooks are
    named ``ovnk_<plugin>_<what>``. This is how plugins talk to each other
    without importing each other's modules.

    :param pluginmanager: the plugin manager of this process.

    Historic: replayed to plugins registered later.

    Honoured in: every process, right after the plugin is registered.
    """


@hookspec
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    """Declare the plugin's settings section.

    Call ``settings.add("<plugin name>", MySettings)`` with a frozen dataclass
    whose fields use :func:`ovnk.setting`. The section is read from the INI file
    section ``[<plugin name>]``, from ``OVNK_<PLUGIN>_<KEY>`` variables and from
    ``--set <plugin>.<key>=...``; invalid values stop startup with a message
    naming the key and the value. A ``validate(self)`` method on the dataclass may
    raise ``ValueError`` for cross-field checks.

    :param settings: the registry of settings sections.

    Honoured in: every process, before the configuration is built.
    """


@hookspec
def ovnk_claims(claims: Claims) -> None:
    """Claim the resources this plugin owns.

    ``claims.crd(path)`` for each CRD file the plugin ships (loaded from the
    plugin package, installed by the chart and by ``ovnk controller``),
    ``claims.owner_type(OwnerType(...))`` for each OVN owner type it writes,
    ``claims.annotation(key)`` for each ``k8s.ovn.org/*`` annotation it writes
    and ``claims.label(key)`` for labels. Two plugins claiming the same thing
    stop startup with one message naming both. A CRD file annotated
    ``ovnk/crd-install: if-missing`` (a CRD other projects ship too) is
    created only where the cluster lacks it, never replaced.

    :param claims: the claim registry; it knows which plugin is calling.

    Honoured in: every process, after configuration.
    """


@hookspec
def ovnk_configure(config: Config, pluginmanager: OvnkPluginManager) -> None:
    """React to the final configuration; the place where a plugin with state creates it.

    The one pattern for plugins that keep state across hooks (pytest's
    two-stage plugins): the entry-point module implements the bootstrap hooks
    (settings, claims, this one, commands) as functions, and here creates one
    runtime object that implements the controller and node hooks as methods,
    registered with ``pluginmanager.register_runtime("<plugin name>", obj)``.
    Whatever that object claims or plans is attributed to the plugin. Create
    controllers, caches and the like lazily in the object's own hooks
    (``ovnk_controllers``, ``ovnk_node_setup``...): this hook also runs in
    processes that never reach them. Read the plugin's settings with
    ``config.plugin_settings("<name>")``.

    :param config: the effective configuration (frozen).
    :param pluginmanager: the plugin manager of this process.

    Honoured in: every process (not for read-only commands), after claims were checked.
    """


@hookspec
def ovnk_unconfigure(config: Config) -> None:
    """Release what ``ovnk_configure`` set up; called once at orderly shutdown.

    :param config: the effective configuration.

    Honoured in: every process, at exit (not called if startup failed earlier).
    """


@hookspec
def ovnk_register_metrics(registry: CollectorRegistry) -> None:
    """Create the plugin's Prometheus collectors on the injected registry.

    Never use prometheus_client's global registry. Name metrics
    ``ovnk_<plugin>_<name>_<unit>``; labels come from a small fixed set.

    :param registry: the registry served on ``/metrics`` by this process.

    Honoured in: controller and node agent, before any worker starts.
    """


@hookspec
def ovnk_register_commands(cli: click.Group) -> None:
    """Add click subcommands to the ``ovnk`` command line.

    Commands of every *installed* plugin are offered, whether or not the plugin
    is enabled (the command line runs anywhere, not only where the controller
    runs); a command that needs the plugin's settings reads them through the
    CLI state's runtime and says so when the plugin is not enabled.

    :param cli: the top-level ``ovnk`` click group; use ``cli.add_command`` or
        ``@cli.command()``.

    Honoured in: the ``ovnk`` CLI, when a command name is not one of core's.
    """


# ---------------------------------------------------------------------------
# Controller (``ovnk controller``): Kubernetes objects -> OVN Northbound
# ---------------------------------------------------------------------------


@hookspec
def ovnk_controllers(ctx: ControllerContext) -> list[ControllerSpec]:
    """Return the reconcilers this plugin contributes.

    Each :class:`ovnk.ControllerSpec` names the resources it watches (core and
    claimed CRDs alike, by group/version/kind), maps events to keys and
    reconciles one key at a time, level-driven, with per-key retries. Core
    starts them after every cache is synced and repair has run, and only while
    this process leads.

    :param ctx: the controller context (kube, nb, owners, settings, metrics).
    :return: a list of controller specs (may be empty).

    Honoured in: controller.
    """
    raise NotImplementedError


@hookspec
def ovnk_controller_tasks(ctx: ControllerContext) -> list[PeriodicTask]:
    """Return the periodic tasks this plugin runs while this controller leads.

    A :class:`ovnk.PeriodicTask` is work on a timer rather than per key (a
    health check of egress nodes every 5 s): core runs each in its own thread
    from the moment the workers start until leadership is lost or the process
    stops. A task usually acts by queueing keys (``ctx.enqueue``).

    :param ctx: the controller context.
    :return: a list of tasks (may be empty).

    Honoured in: controller, after repair, only while this process leads.
    """
    raise NotImplementedError


@hookspec
def ovnk_restore(ctx: ControllerContext) -> None:
    """Rebuild in-memory state from what exists, before repair and before any worker runs.

    Allocators above all: node subnets and ids from the node annotations, pod
    IPs from the ports ovnk committed to NB. Read the caches (``ctx.cache``) and
    NB (``ctx.nb.owned``...), write nothing: a transaction committed here is
    refused. This runs whatever ``[controller] repair-mode`` says, so the
    state is right even when repair is off.

    A restore that raises stops start-up (this controller gives up leadership
    and exits non-zero) with a message naming the plugin: a controller with
    half-restored allocators would hand out addresses that are in use.

    :param ctx: the controller context.

    Honoured in: controller, at startup and on each leadership gain, after the caches synced.
    """


@hookspec
def ovnk_repair(ctx: ControllerContext, plan: RepairPlan) -> None:
    """Plan the repair of the plugin's NB rows: what to delete, and what content to reset.

    Called once after ``ovnk_restore`` and before workers start. Compare
    ``ctx.nb.owned(owner_type)`` with what the cache says should exist and call
    ``plan.stale(row, reason=...)`` for rows to delete, or
    ``plan.converge(row, columns=..., reason=...)`` for content of existing
    rows that no key's reconcile rewrites whole (the members of a set that
    reconciles only add to and remove from). Plan only: write nothing here.
    Missing and otherwise drifted rows need no plan: the first reconcile of
    every key, which always runs, fixes them. Rows of owner types no enabled
    plugin claims are added to the plan by core (that is how switching a plugin
    off removes what it created). ``[controller] repair-mode`` decides: the plan
    is applied (``repair``), only logged (``log``) or not even made (``off``).

    A repair hook that raises stops start-up with a message naming the plugin.

    :param ctx: the controller context.
    :param plan: the plan to add to.

    Honoured in: controller, at startup and on each leadership gain (not with repair-mode off).
    """


@hookspec
def ovnk_cluster_topology(ctx: ControllerContext, topology: ClusterTopology) -> None:
    """Adjust the cluster-wide rows before they are written.

    For example multicast sets ``options:mcast_relay=true`` on
    ``ovn_cluster_router``. Only change keys your feature owns; the rows stay
    core's.

    :param ctx: the controller context.
    :param topology: intents of ``ovn_cluster_router``, ``join`` and the LB groups.

    Honoured in: controller, on every cluster topology reconcile.
    """


@hookspec(firstresult=True)
def ovnk_node_hostsubnet(ctx: ControllerContext, node: Mapping[str, Any]) -> bool | None:
    """Decide whether a node gets a host subnet from the cluster subnets.

    Hybrid overlay answers ``False`` for Windows / no-hostsubnet nodes (it
    allocates their subnet itself).

    :param ctx: the controller context.
    :param node: the Node object (a read-only dict from the cache).
    :return: ``False`` to skip, ``True`` to allocate, ``None`` for no opinion.

    First result: stops at the first non-None answer; default is to allocate.

    Honoured in: controller, node reconcile.
    """


@hookspec
def ovnk_node_topology(ctx: ControllerContext, node: Mapping[str, Any], topology: NodeTopology) -> None:
    """Adjust a node's rows before they are diffed against NB and written.

    ``topology`` holds the intents of the node switch, its router ports, the
    gateway router, the external switch, routes, policies and NAT. Examples:
    hybrid overlay adds ``.3`` to the switch's ``exclude_ips`` (core IPAM
    honours it) and its policies; multicast sets the switch's mcast options.

    :param ctx: the controller context.
    :param node: the Node object.
    :param topology: the node topology intents, mutable.

    Honoured in: controller, node reconcile.
    """


@hookspec
def ovnk_node_txn(ctx: ControllerContext, txn: NbTxn, node: Mapping[str, Any], deleted: bool) -> None:
    """Add commands to the one NB transaction of a node event.

    :param ctx: the controller context.
    :param txn: the node's transaction; add commands with ``txn.add`` or the
        idempotent ``txn.ensure_*`` helpers. Do not commit.
    :param node: the Node object (the last known state when deleted).
    :param deleted: the node is gone; remove what you added for it.

    Honoured in: controller, node reconcile.
    """


@hookspec
def ovnk_namespace_txn(
    ctx: ControllerContext, txn: NbTxn, namespace: Mapping[str, Any], deleted: bool
) -> None:
    """Add commands to the one NB transaction of a namespace event.

    :param ctx: the controller context.
    :param txn: the namespace's transaction.
    :param namespace: the Namespace object (last known state when deleted).
    :param deleted: the namespace is gone.

    Honoured in: controller, namespace reconcile.
    """


@hookspec
def ovnk_namespace_port_groups(ctx: ControllerContext) -> bool | None:
    """Ask core to keep a port group per namespace holding the namespace's pods.

    Features that attach ACLs to "every pod of a namespace" (multicast, egress
    firewall) answer ``True``; core then creates the port group
    (``ovnk.names.namespace_port_group(controller, namespace)``, owner type
    ``Namespace``, as upstream) with each namespace, adds every pod's port to
    it in the pod's own transaction, and removes it with the namespace. When no
    enabled plugin answers ``True`` there are none, and repair removes those
    left from a run that had them.

    :param ctx: the controller context.
    :return: ``True`` to need them; ``None`` (or ``False``) for no need.

    Honoured in: controller, once when the controllers are built.
    """


@hookspec
def ovnk_pod_networks(
    ctx: ControllerContext, pod: Mapping[str, Any], networks: MutableMapping[str, Any]
) -> None:
    """Add entries to a pod's ``k8s.ovn.org/pod-networks`` annotation before it is written.

    ``networks`` already holds ``"default"``. Secondary networks add
    ``"<nadNamespace>/<nadName>"`` entries they allocated. The annotation is
    written before any logical port exists.

    :param ctx: the controller context.
    :param pod: the Pod object.
    :param networks: the annotation's content, mutable.

    Honoured in: controller, pod reconcile, only when the annotation changes.
    """


@hookspec
def ovnk_pod_lsp(ctx: ControllerContext, pod: Mapping[str, Any], lsp: PodPort) -> None:
    """Adjust a pod's logical switch port intent before it is written.

    :param ctx: the controller context.
    :param pod: the Pod object.
    :param lsp: the intent (name, switch, addresses, port security, options,
        external_ids, port groups), mutable.

    Honoured in: controller, pod reconcile.
    """


@hookspec
def ovnk_pod_txn(
    ctx: ControllerContext,
    txn: NbTxn,
    pod: Mapping[str, Any],
    lsp: PodPort | None,
    deleted: bool,
) -> None:
    """Add commands to the one NB transaction of a pod event.

    The pod's LSP command was added already, so port-group memberships or ACLs
    may refer to it (``txn.ref(lsp.name)``). EgressFirewall and multicast add the
    port to namespace port groups here, EgressIP its reroute policy, NetworkPolicy
    the port to the existing policy and default-deny groups that select it and
    the IPs to the existing peer address sets that select it.

    :param ctx: the controller context.
    :param txn: the pod's transaction.
    :param pod: the Pod object.
    :param lsp: the port intent, or ``None`` when the pod has no port here.
    :param deleted: the pod is gone or completed; remove what you added.

    Honoured in: controller, pod reconcile.
    """


@hookspec(firstresult=True)
def ovnk_nb_commit(txn: NbTxn) -> str | None:
    """Commit an NB transaction; core's implementation is ``trylast`` and does the commit.

    Plugins do not replace it; they wrap it (``@hookimpl(wrapper=True)``) to time
    or trace commits.

    :param txn: the transaction to commit.
    :return: the commit result (``"committed"`` or ``"unchanged"``).

    First result.

    Honoured in: controller and node agent, on every non-empty transaction.
    """


# ---------------------------------------------------------------------------
# Node agent (``ovnk node``)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def ovnk_node_management_port(ctx: NodeContext, name: str, iface_id: str, mtu: int) -> bool | None:
    """Provide the device of the management port instead of core's OVS internal port.

    An implementation that answers ``True`` has made the host netdev ``name``
    exist in the node's namespace and plugged what carries its frames into
    ``br-int`` with ``external_ids:iface-id=<iface_id>`` (hardware offload: a VF
    renamed to ``name`` and its representor as the port). Core then gives
    ``name`` its MAC, MTU, addresses and routes as it does its internal port.
    Core's internal port of an earlier run holds the name: the implementation
    removes it first (``ctx.ovs.delete_ports([name], wait_vswitchd=True)``). It
    runs on every agent start: an implementation finds its device in place and
    only re-asserts it; one that provided the device before and does not any
    more puts it back and answers ``None``, and core creates its internal port.

    A raising implementation stops start-up.

    :param ctx: the node context.
    :param name: the management port's netdev name (``[node] mgmt-port``, ``ovn-k8s-mp0``).
    :param iface_id: the management port's logical switch port (``k8s-<node>``).
    :param mtu: the MTU to give what the plugin plugs.
    :return: ``True`` when the plugin provided the device, else ``None``.

    First result.

    Honoured in: node agent, at start, after the node subnets are known and before ``ovnk_node_setup``.
    """


@hookspec
def ovnk_node_setup(ctx: NodeContext) -> None:
    """One-time node setup before the CNI server opens.

    Create bridges, ports, OpenFlow flows and sysctls the feature needs,
    through ``ctx.ovs``, ``ctx.flows``, ``ctx.net`` and ``ctx.nft`` (core's
    facades; plugins never call pyroute2, nft or ovs-vsctl themselves). Must be
    idempotent: it runs on every agent start, with state from the previous run
    still present. State that must follow the cluster belongs in a node
    controller (``ovnk_node_controllers``); a bridge created here and declared
    with ``ctx.flows.manage(bridge)`` gets its flows restored by core after an
    ovs-vswitchd restart.

    A setup that raises stops start-up with a message naming the plugin and
    the hook (the agent exits non-zero and records a Warning event on its Node).

    :param ctx: the node context.

    Honoured in: node agent, at start, after the gateway bridge and the management port.
    """


@hookspec
def ovnk_node_controllers(ctx: NodeContext) -> list[ControllerSpec]:
    """Return the node controllers this plugin contributes: level-driven reconcilers of node state.

    The same :class:`ovnk.ControllerSpec` and :class:`ovnk.Watch` as
    ``ovnk_controllers``, run by the node agent's own runner on its shared
    informers (no leader election: every agent runs its controllers). A node
    controller typically watches with a field or label selector (the pods of
    this node: ``Watch(PODS, field_selector=f"spec.nodeName={ctx.node_name}")``),
    keys on what it converges (a bridge, an nft table), converges it through
    ``ctx.nft``, ``ctx.net``, ``ctx.ovs`` and ``ctx.flows``, and sets
    ``resync_period`` to repair kernel and OVS state that drifts without an
    event. Triggers that are not Kubernetes events go through
    ``ctx.enqueue(controller, key)`` (``ctx.ovs.subscribe`` for OVS changes).
    A failing reconcile is retried with backoff.

    :param ctx: the node context.
    :return: a list of controller specs (may be empty).

    Honoured in: node agent, after ``ovnk_node_setup`` and the first flow sync, before it reports ready.
    """
    raise NotImplementedError


@hookspec
def ovnk_node_annotations(ctx: NodeContext, annotations: MutableMapping[str, str | None]) -> None:
    """Contribute annotations the node agent publishes on its own Node.

    Values are strings (JSON where ovn-kubernetes uses JSON); ``None`` removes
    the annotation. Only annotations claimed by the plugin may be written. A
    key the plugin published before and no longer gives is removed, and the
    keys of a plugin that is switched off are removed at the next agent start.

    An implementation that raises during start-up stops it with a message
    naming the plugin; later, the failure is logged naming the plugin, its
    annotations stay as they are and the others are published.

    :param ctx: the node context.
    :param annotations: the annotations to publish, mutable.

    Honoured in: node agent, at start, when the Node's annotations change and every minute.
    """


@hookspec
def ovnk_node_managers(ctx: NodeContext) -> list[NodeManager]:
    """Return long-running node-side services that are not state to converge.

    egressip's health-check server is one: something that serves until the
    agent stops. Node state (flows, nftables, rules, routes, OVS keys) belongs
    in a node controller (``ovnk_node_controllers``), which core resyncs.

    :param ctx: the node context.
    :return: managers whose ``run(stop_event)`` core runs in a thread each
        (restarted after an exception).

    Honoured in: node agent, after the node controllers started.
    """
    raise NotImplementedError


# ---------------------------------------------------------------------------
# CNI server (inside the node agent)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def ovnk_cni_network(ctx: NodeContext, request: CniRequest) -> CniNetwork | None:
    """Resolve which network a CNI request is for.

    Core's ``trylast`` implementation handles the default network (annotation
    key ``default``, iface-id ``<ns>_<pod>``). Secondary networks answer for
    requests whose netconf names a NetworkAttachmentDefinition.

    :param ctx: the node context.
    :param request: the parsed CNI request.
    :return: the network (annotation key, iface-id, MTU...), or ``None``.

    First result.

    Honoured in: CNI server, ADD, CHECK and DEL.
    """


@hookspec(firstresult=True)
def ovnk_cni_interface_driver(
    ctx: NodeContext, request: CniRequest, network: CniNetwork
) -> InterfaceDriver | None:
    """Choose how the pod interface is wired.

    Core's ``trylast`` implementation returns the veth driver. Hardware offload
    returns a VF-representor driver when the request carries a ``deviceID``.

    :param ctx: the node context.
    :param request: the parsed CNI request.
    :param network: the resolved network.
    :return: an interface driver, or ``None`` to let the next plugin decide.

    First result.

    Honoured in: CNI server, ADD, CHECK and DEL.
    """


@hookspec
def ovnk_cni_add(ctx: NodeContext, request: CniRequest, result: CniResult) -> None:
    """Notification after a successful ADD; may amend the result.

    :param ctx: the node context.
    :param request: the CNI request.
    :param result: the result about to be returned, mutable.

    Honoured in: CNI server, ADD.
    """


@hookspec
def ovnk_cni_del(ctx: NodeContext, request: CniRequest) -> None:
    """Notification after a DEL tore the interface down. Must not fail for unknown containers.

    :param ctx: the node context.
    :param request: the CNI request.

    Honoured in: CNI server, DEL.
    """


# ---------------------------------------------------------------------------
# Tools (``ovnk trace``)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def ovnk_trace_explain(table: str, external_ids: Mapping[str, str], columns: Mapping[str, Any]) -> str | None:
    """Name, in Kubernetes terms, an NB row a traced packet met (``ovnk trace``).

    ``ovnk trace`` maps every logical flow of an ``ovn-trace`` back to the NB
    row it was made from (an ACL, a load balancer, a router policy, a NAT) and
    asks the plugins to name it: ``"NetworkPolicy ns/web, ingress rule 0 (allow-related)"``.
    A plugin answers for the owner types it claims and returns ``None`` for the
    rest; a row nobody names is described from its ownership ``external_ids``.

    :param table: the NB table (``ACL``, ``Load_Balancer``, ``Logical_Router_Policy``, ``NAT``...).
    :param external_ids: the row's ``external_ids`` (owner type, ``k8s.ovn.org/name``, the type's keys).
    :param columns: plain copies of the row's ``match``, ``action``, ``priority``, ``direction``
        (ACL), ``type`` (NAT), ``vips``/``protocol`` (Load_Balancer) where the table has them.
    :return: one line naming the object and its rule, or ``None``.

    First result: the first non-None answer wins.

    Honoured in: ``ovnk trace`` (the command, not the controller); no I/O.
    """
