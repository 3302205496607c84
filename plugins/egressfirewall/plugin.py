"""Entry-point module of the egressfirewall plugin: settings, claims, metrics, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` registers
:class:`EgressFirewallPlugin`, whose methods are the controller hooks (the
stateful-plugin pattern, see docs/hooks.md). The plugin has no node side: its
rules are ACLs that ovn-controller enforces.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ovnk import hookimpl
from ovnk.plugins.egressfirewall import nb
from ovnk.plugins.egressfirewall.settings import EgressFirewallSettings

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk import SettingsRegistry
    from ovnk.plugins.egressfirewall.controller import EgressFirewallControllers
    from ovnk.plugins.egressfirewall.metrics import EgressFirewallMetrics

NAME = "egressfirewall"
CRD = Path(__file__).parent / "crds" / "egressfirewalls.yaml"


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, EgressFirewallSettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    claims.crd(CRD)
    for owner in nb.OWNER_TYPES:
        claims.owner_type(owner)


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.egressfirewall.cli import egressfirewall_group

    cli.add_command(egressfirewall_group)


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    pluginmanager.register_runtime(NAME, EgressFirewallPlugin(config.plugin_settings(NAME)))


class EgressFirewallPlugin:
    """The runtime half: the two controllers, repair, and the namespace port groups the ACLs hang on."""

    def __init__(self, settings: EgressFirewallSettings) -> None:
        self.settings = settings
        self.metrics: EgressFirewallMetrics | None = None
        self.controllers: EgressFirewallControllers | None = None

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.egressfirewall.metrics import EgressFirewallMetrics

        self.metrics = EgressFirewallMetrics.create(registry)

    @hookimpl
    def ovnk_namespace_port_groups(self, ctx: ControllerContext) -> bool:
        return True

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        from ovnk.plugins.egressfirewall.controller import EgressFirewallControllers

        self.controllers = EgressFirewallControllers(ctx, self.settings, self.metrics)
        return self.controllers.specs()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controllers is not None
        self.controllers.plan_repair(plan)
