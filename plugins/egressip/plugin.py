"""Entry-point module of the egressip plugin: settings, claims, metrics, commands, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` registers
:class:`EgressIPPlugin`, whose methods are the controller and node-agent hooks
(the one stateful-plugin pattern, see docs/hooks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from ovnk import hookimpl
from ovnk.plugins.egressip import nb
from ovnk.plugins.egressip.settings import EgressIPSettings

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import NbTxn
    from ovnk import NodeContext
    from ovnk import NodeManager
    from ovnk import PeriodicTask
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk import SettingsRegistry
    from ovnk.plugins.egressip.controller import EgressIPControllers
    from ovnk.plugins.egressip.metrics import EgressIPMetrics

NAME = "egressip"
CRD = Path(__file__).parent / "crds" / "egressips.yaml"


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, EgressIPSettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    from ovnk import egress

    claims.crd(CRD)
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)
    for owner in egress.SHARED_OWNERS:
        claims.owner_type(owner, shared=True)


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    pluginmanager.register_runtime(NAME, EgressIPPlugin(config.plugin_settings(NAME)))


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.egressip.cli import egressip_group

    cli.add_command(egressip_group)


class EgressIPPlugin:
    """The runtime half: controllers, health task and repair in the controller; the health
    service in the node agent."""

    def __init__(self, settings: EgressIPSettings) -> None:
        self.settings = settings
        self.metrics: EgressIPMetrics | None = None
        self.controllers: EgressIPControllers | None = None

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.egressip.metrics import EgressIPMetrics

        self.metrics = EgressIPMetrics.create(registry)

    # -- controller ----------------------------------------------------------------

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        from ovnk.plugins.egressip.controller import EgressIPControllers

        self.controllers = EgressIPControllers(ctx, self.settings, self.metrics)
        return self.controllers.specs()

    @hookimpl
    def ovnk_controller_tasks(self, ctx: ControllerContext) -> list[PeriodicTask]:
        assert self.controllers is not None
        return self.controllers.tasks()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controllers is not None
        self.controllers.plan_repair(plan)

    @hookimpl
    def ovnk_node_txn(self, ctx: ControllerContext, txn: NbTxn, node: Mapping[str, Any], deleted: bool) -> None:
        """Every node switch marks the replies of served pods (where OVN's QoS can ``mark``)."""
        if deleted or not ctx.nb.allows_key("QoS", "action", "mark"):
            return
        from ovnk import Match
        from ovnk import Parent
        from ovnk import names

        switch = Parent(Match.of("Logical_Switch", name=names.node_switch(node["metadata"]["name"])), "qos_rules")
        internal = [*(s.network for s in ctx.config.default.cluster_subnets), ctx.config.gateway.v4_join_subnet]
        for version in sorted({s.network.version for s in ctx.config.default.cluster_subnets}):
            ids, columns = nb.reply_mark_qos(ctx.controller_name, version, internal=internal)
            txn.ensure("QoS", ids=ids, columns=columns, parent=switch)

    # -- node agent ----------------------------------------------------------------------

    @hookimpl
    def ovnk_node_managers(self, ctx: NodeContext) -> list[NodeManager]:
        from ovnk.plugins.egressip.node import health_service

        return [health_service(ctx, self.settings)]

    @hookimpl
    def ovnk_node_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        from ovnk.plugins.egressip.node import ArpResponder

        return [ArpResponder(ctx).spec()] if ctx.gateway_bridge else []
