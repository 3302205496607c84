"""Core plugin: Services, replacing kube-proxy (ovn-kubernetes.md §4).

* Claims the ``Service`` owner type of ``Load_Balancer`` rows.
* Controller ``services`` (keys ``ns/name``): watches Services, EndpointSlices
  (by their ``kubernetes.io/service-name`` label; ``discovery.k8s.io/v1``, or
  ``v1beta1`` where only that is served) and Nodes, and keeps each Service's
  load balancers in one NB transaction per reconcile (:mod:`.controller`,
  :mod:`.model`). Metrics ``ovnk_services_sync_total{result}`` and
  ``ovnk_services_sync_duration_seconds``.
* Repair (before workers): LBs of Services that are gone, headless or
  ExternalName, and per-node LBs of nodes that are gone.
* Node agent: the node controller ``nodeport`` steers NodePort and
  external-IP traffic from the uplink to the OVN patch port of the gateway
  bridge (:mod:`.nodeport`); its flows are first declared in
  ``ovnk_node_setup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from ovnk.core.builtin.services.controller import LB_OWNER
from ovnk.core.builtin.services.controller import ServicesController
from ovnk.core.claims import Claims
from ovnk.core.context import ControllerContext
from ovnk.core.hookspecs import hookimpl
from ovnk.core.ovn.ids import parse_ids
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.reconcile.spec import ControllerSpec

if TYPE_CHECKING:
    # Node-only code (the NodePort steering pulls in pyroute2 through the gateway): the controller
    # process loads this plugin too and never runs it, so it is imported where the node agent needs it.
    from ovnk.core.builtin.services.nodeport import NodePortSteering
    from ovnk.core.node.context import NodeContext

__all__ = ["LB_OWNER", "NodePortSteering", "ServicesController", "ServicesPlugin"]


def __getattr__(name: str) -> Any:
    # ``NodePortSteering`` stays importable from here without the controller paying for it.
    if name == "NodePortSteering":
        from ovnk.core.builtin.services.nodeport import NodePortSteering

        return NodePortSteering
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    claims.owner_type(LB_OWNER)


class ServicesPlugin:
    """The runtime half of this plugin (registered by ``ovnk_configure``): the controller and its repair,
    and on the node the NodePort steering."""

    def __init__(self) -> None:
        self.controller: ServicesController | None = None
        self.steering: NodePortSteering | None = None

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        self.controller = ServicesController(ctx)
        return [self.controller.spec()]

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controller is not None
        self.controller.plan_stale(plan)

    @hookimpl
    def ovnk_node_setup(self, ctx: NodeContext) -> None:
        if _steers(ctx):
            from ovnk.core.builtin.services.nodeport import NodePortSteering

            self.steering = NodePortSteering(ctx)
            self.steering.declare()

    @hookimpl
    def ovnk_node_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        if self.steering is None:
            return []
        self.steering.subscribe()
        return [self.steering.spec()]


@hookimpl
def ovnk_configure(pluginmanager: OvnkPluginManager) -> None:
    pluginmanager.register_runtime("core.services", ServicesPlugin())


def _steers(ctx: NodeContext) -> bool:
    return bool(ctx.gateway_bridge) and ctx.config.gateway.nodeport


@hookimpl
def ovnk_trace_explain(table: str, external_ids: Mapping[str, str]) -> str | None:
    ids = parse_ids(LB_OWNER, external_ids) if table == "Load_Balancer" else None
    if ids is None:
        return None
    scope = ids.value("scope")
    where = "cluster-wide" if scope == "cluster" else f"scope {scope}"
    return f"Service {ids.value('name')} load balancer ({ids.value('protocol')}, {where})"
