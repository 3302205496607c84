"""Entry-point module of the egressservice plugin: claims, metrics, commands, and its runtime.

The module-level hooks run in every process; ``ovnk_configure`` registers
:class:`EgressServicePlugin`, whose methods are the controller and node-agent
hooks (the one stateful-plugin pattern, see docs/hooks.md). Node health comes
from EgressIP's published hooks when EgressIP is enabled (``optionalhook``:
without it they are simply never called).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ovnk import hookimpl
from ovnk.plugins.egressservice import nb

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import Config
    from ovnk import ControllerContext
    from ovnk import ControllerSpec
    from ovnk import NodeContext
    from ovnk import PluginManager
    from ovnk import RepairPlan
    from ovnk.plugins.egressservice.controller import EgressServiceControllers
    from ovnk.plugins.egressservice.metrics import EgressServiceMetrics

NAME = "egressservice"
CRD = Path(__file__).parent / "crds" / "egressservices.yaml"


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
    pluginmanager.register_runtime(NAME, EgressServicePlugin())


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.egressservice.cli import egressservice_group

    cli.add_command(egressservice_group)


class EgressServicePlugin:
    """The runtime half: the controllers and repair in the controller; SNAT and rules in the agent."""

    def __init__(self) -> None:
        self.metrics: EgressServiceMetrics | None = None
        self.controllers: EgressServiceControllers | None = None

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.egressservice.metrics import EgressServiceMetrics

        self.metrics = EgressServiceMetrics.create(registry)

    # -- controller ----------------------------------------------------------------

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        from ovnk.plugins.egressservice.controller import EgressServiceControllers

        self.controllers = EgressServiceControllers(ctx, self.metrics)
        return self.controllers.specs()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controllers is not None
        self.controllers.plan_repair(plan)

    @hookimpl(optionalhook=True)
    def ovnk_egressip_health_targets(self, ctx: ControllerContext) -> Iterable[str]:
        """EgressIP (when enabled) checks every node that can host a service."""
        return self.controllers.health_targets() if self.controllers is not None else ()

    @hookimpl(optionalhook=True)
    def ovnk_egressip_health_changed(self, ctx: ControllerContext, reachable: Mapping[str, bool]) -> None:
        if self.controllers is not None:
            self.controllers.health_changed(reachable)

    # -- node agent ----------------------------------------------------------------------

    @hookimpl
    def ovnk_node_setup(self, ctx: NodeContext) -> None:
        from ovnk.plugins.egressservice.node import enable_forwarding

        enable_forwarding(ctx)

    @hookimpl
    def ovnk_node_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        from ovnk.plugins.egressservice.node import EgressServiceNode

        return [EgressServiceNode(ctx).spec()]
