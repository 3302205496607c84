"""Entry-point module of the multicast plugin: settings, claims, commands, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` registers
:class:`MulticastPlugin`, whose methods are the controller hooks (the one
stateful-plugin pattern, see docs/hooks.md). Multicast has no node-agent side:
snooping, querying and relaying are ovn-controller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from ovnk import hookimpl
from ovnk.plugins.multicast import nb
from ovnk.plugins.multicast.models import MULTICAST_ENABLED
from ovnk.plugins.multicast.settings import MulticastSettings

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import ClusterTopology
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import NbTxn
    from ovnk import NodeTopology
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk import SettingsRegistry
    from ovnk.plugins.multicast.controller import MulticastControllers
    from ovnk.plugins.multicast.metrics import MulticastMetrics

NAME = "multicast"


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, MulticastSettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)
    claims.annotation(MULTICAST_ENABLED)


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    pluginmanager.register_runtime(NAME, MulticastPlugin(config.plugin_settings(NAME)))


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.multicast.cli import multicast_group

    cli.add_command(multicast_group)


class MulticastPlugin:
    """The runtime half: the cluster ACLs' controller, the namespace ACLs, the switch and router
    options of core's topology, repair."""

    def __init__(self, settings: MulticastSettings) -> None:
        self.settings = settings
        self.metrics: MulticastMetrics | None = None
        self.controllers: MulticastControllers | None = None

    def _enabled_namespaces(self) -> float:
        return float(self.controllers.enabled_namespaces()) if self.controllers is not None else 0.0

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.multicast.metrics import MulticastMetrics

        self.metrics = MulticastMetrics.create(registry, enabled_namespaces=self._enabled_namespaces)

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        from ovnk.plugins.multicast.controller import MulticastControllers

        self.controllers = MulticastControllers(ctx)
        return self.controllers.specs()

    @hookimpl
    def ovnk_namespace_port_groups(self, ctx: ControllerContext) -> bool:
        return True

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controllers is not None
        self.controllers.plan_repair(plan)

    @hookimpl
    def ovnk_cluster_topology(self, ctx: ControllerContext, topology: ClusterTopology) -> None:
        """IGMP/MLD relay on the cluster router: multicast crosses from one node switch to another."""
        from ovnk import names

        router = topology.rows.get(names.CLUSTER_ROUTER)
        if router is not None:
            router.columns["options"] = {**router.columns.get("options", {}), **nb.ROUTER_OPTIONS}

    @hookimpl
    def ovnk_node_topology(self, ctx: ControllerContext, node: Mapping[str, Any], topology: NodeTopology) -> None:
        """Snooping and the querier on the node switch."""
        switch = topology.rows.get("switch")
        if switch is None:
            return
        rtos = topology.rows.get("rtos")
        router_mac = str(rtos.columns["mac"]) if rtos is not None and rtos.columns.get("mac") else None
        options = nb.switch_other_config(subnets=topology.subnets, router_mac=router_mac,
                                         idle_timeout=self.settings.idle_timeout,
                                         query_interval=self.settings.query_interval)
        switch.columns["other_config"] = {**switch.columns.get("other_config", {}), **options}

    @hookimpl
    def ovnk_namespace_txn(self, ctx: ControllerContext, txn: NbTxn, namespace: Mapping[str, Any],
                           deleted: bool) -> None:
        assert self.controllers is not None
        self.controllers.namespace_txn(txn, namespace, deleted)
