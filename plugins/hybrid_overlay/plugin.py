"""Entry-point module of the hybrid_overlay plugin: settings, claims, commands, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` checks the
settings against the cluster's networks and registers
:class:`HybridOverlayPlugin`, whose methods are the controller and node-agent
hooks (the one stateful-plugin pattern, see docs/hooks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from ovnk import ConfigError
from ovnk import hookimpl
from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay import nb
from ovnk.plugins.hybrid_overlay.settings import HybridOverlaySettings

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import NodeContext
    from ovnk import NodeTopology
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk import SettingsRegistry
    from ovnk.plugins.hybrid_overlay.controller import HybridOverlayController
    from ovnk.plugins.hybrid_overlay.metrics import HybridOverlayMetrics
    from ovnk.plugins.hybrid_overlay.node import HybridOverlayNode

NAME = "hybrid_overlay"


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, HybridOverlaySettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)
    for key in (models.NODE_SUBNET, models.DR_IP, models.DR_MAC):
        claims.annotation(key)


def check_settings(settings: HybridOverlaySettings, config: Config) -> None:
    """The hybrid subnets must not overlap the cluster's own networks; the VXLAN port not OVN's tunnels.

    :raises ConfigError: naming the setting and what it collides with.
    """
    taken = [(f"[default] cluster-subnets {c}", c.network) for c in config.default.cluster_subnets]
    taken += [(f"[kubernetes] service-cidrs {c}", c) for c in config.kubernetes.service_cidrs]
    taken += [(f"[gateway] v4-join-subnet {config.gateway.v4_join_subnet}", config.gateway.v4_join_subnet),
              (f"[gateway] v4-masquerade-subnet {config.gateway.v4_masquerade_subnet}",
               config.gateway.v4_masquerade_subnet)]
    for subnet in settings.cluster_subnets:
        for what, network in taken:
            if network.version == 4 and subnet.network.overlaps(network):
                raise ConfigError(f"[{NAME}] cluster-subnets {subnet} overlaps {what}")
    if config.default.encap_type == "vxlan" and config.default.encap_port == settings.vxlan_port:
        raise ConfigError(f"[{NAME}] vxlan-port {settings.vxlan_port} is OVN's own VXLAN port "
                          f"([default] encap-port); choose another one")


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    settings = config.plugin_settings(NAME)
    check_settings(settings, config)
    pluginmanager.register_runtime(NAME, HybridOverlayPlugin(settings))


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.hybrid_overlay.cli import hybrid_overlay_group

    cli.add_command(hybrid_overlay_group)


class HybridOverlayPlugin:
    """The runtime half: the controller's reconciler and topology hooks; the agent's bridge and flows."""

    def __init__(self, settings: HybridOverlaySettings) -> None:
        self.settings = settings
        self.metrics: HybridOverlayMetrics | None = None
        self.controller: HybridOverlayController | None = None
        self.node: HybridOverlayNode | None = None

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.hybrid_overlay.metrics import HybridOverlayMetrics

        self.metrics = HybridOverlayMetrics.create(registry)

    # -- controller --------------------------------------------------------------------

    def _controller(self, ctx: ControllerContext) -> HybridOverlayController:
        if self.controller is None:
            from ovnk.plugins.hybrid_overlay.controller import HybridOverlayController

            self.controller = HybridOverlayController(ctx, self.settings, self.metrics)
        return self.controller

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        return self._controller(ctx).specs()

    @hookimpl
    def ovnk_restore(self, ctx: ControllerContext) -> None:
        self._controller(ctx).restore()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        self._controller(ctx).plan_repair(plan)

    @hookimpl
    def ovnk_node_hostsubnet(self, ctx: ControllerContext, node: Mapping[str, Any]) -> bool | None:
        return self._controller(ctx).hostsubnet(node)

    @hookimpl
    def ovnk_node_topology(self, ctx: ControllerContext, node: Mapping[str, Any], topology: NodeTopology) -> None:
        self._controller(ctx).topology(node, topology)

    # -- node agent ---------------------------------------------------------------------

    def _node(self, ctx: NodeContext) -> HybridOverlayNode:
        if self.node is None:
            from ovnk.plugins.hybrid_overlay.node import HybridOverlayNode

            self.node = HybridOverlayNode(ctx, self.settings, self.metrics)
        return self.node

    @hookimpl
    def ovnk_node_setup(self, ctx: NodeContext) -> None:
        self._node(ctx).setup()

    @hookimpl
    def ovnk_node_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        return [self._node(ctx).spec()]
