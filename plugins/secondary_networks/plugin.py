"""Entry-point module of the secondary_networks plugin: settings, claims, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` registers
:class:`SecondaryNetworksPlugin`, whose methods are the controller, node-agent
and CNI hooks (the stateful-plugin pattern, see docs/hooks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from ovnk import hookimpl
from ovnk.plugins.secondary_networks import nb
from ovnk.plugins.secondary_networks.settings import SecondaryNetworksSettings

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import CniNetwork
    from ovnk import CniRequest
    from ovnk import CniResult
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import NodeContext
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk import SettingsRegistry
    from ovnk.plugins.secondary_networks.controller import SecondaryNetworks

NAME = "secondary_networks"
CRD = Path(__file__).parent / "crds" / "network-attachment-definitions.yaml"


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, SecondaryNetworksSettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    claims.crd(CRD)
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    pluginmanager.register_runtime(NAME, SecondaryNetworksPlugin(config.plugin_settings(NAME)))


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.secondary_networks.cli import networks_command

    cli.add_command(networks_command)


class SecondaryNetworksPlugin:
    """The runtime half: the NAD controller and per-network controllers in the controller; bridge
    mappings, the CNI network of NAD attachments and (``attachments = agent``) the delegation of a
    pod's attachments in the node agent."""

    def __init__(self, settings: SecondaryNetworksSettings) -> None:
        self.settings = settings
        self.networks: SecondaryNetworks | None = None

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.secondary_networks.metrics import register

        register(registry, lambda: self.networks.registry if self.networks is not None else None)

    # -- controller ----------------------------------------------------------------

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        from ovnk.plugins.secondary_networks.controller import SecondaryNetworks

        self.networks = SecondaryNetworks(ctx)
        return self.networks.specs()

    @hookimpl
    def ovnk_restore(self, ctx: ControllerContext) -> None:
        assert self.networks is not None
        self.networks.restore()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.networks is not None
        self.networks.plan_repair(plan)

    @hookimpl
    def ovnk_pod_networks(self, ctx: ControllerContext, pod: Mapping[str, Any],
                          networks: MutableMapping[str, Any]) -> None:
        """The pod's attachments in core's first write of the annotation (saves a round trip);
        an attachment that cannot be had yet is left to its network's controller, which reports."""
        if self.networks is None:
            return
        for controller in list(self.networks.controllers.copy().values()):
            controller.add_entries(pod, networks)

    # -- node agent and CNI -------------------------------------------------------------

    @hookimpl
    def ovnk_node_setup(self, ctx: NodeContext) -> None:
        from ovnk.plugins.secondary_networks.node import setup_bridges

        setup_bridges(ctx, self.settings)

    @hookimpl
    def ovnk_cni_network(self, ctx: NodeContext, request: CniRequest) -> CniNetwork | None:
        from ovnk.plugins.secondary_networks.node import cni_network

        return cni_network(ctx, request)

    @hookimpl
    def ovnk_cni_add(self, ctx: NodeContext, request: CniRequest, result: CniResult) -> None:
        if self.settings.attachments != "agent":
            return
        from ovnk.plugins.secondary_networks.node import delegate_add

        delegate_add(ctx, request, result)

    @hookimpl
    def ovnk_cni_del(self, ctx: NodeContext, request: CniRequest) -> None:
        if self.settings.attachments != "agent":
            return
        from ovnk.plugins.secondary_networks.node import delegate_del

        delegate_del(ctx, request)
