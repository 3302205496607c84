"""Hooks EgressIP publishes (``ovnk_addhooks``): its node health checks, for other egress features.

EgressIP checks egress nodes' ``grpc.health.v1`` service every
``reachability-interval`` seconds (:mod:`.health`). Another feature that
needs the same verdict (EgressService's host nodes) implements these hooks
with ``@hookimpl(optionalhook=True)`` on its runtime object, so it loads
whether EgressIP is enabled or not, and never imports EgressIP.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ovnk import hookspec

if TYPE_CHECKING:
    from ovnk import ControllerContext


@hookspec
def ovnk_egressip_health_targets(ctx: ControllerContext) -> Iterable[str] | None:
    """Name more nodes for EgressIP's health checks (besides the egress-assignable ones).

    :param ctx: the controller's context.
    :returns: node names (nodes without a known address are skipped), or ``None``.

    Called by the leader at the start of every round of checks; must be cheap (cache reads).
    """


@hookspec
def ovnk_egressip_health_changed(ctx: ControllerContext, reachable: Mapping[str, bool]) -> None:
    """A round of health checks changed the verdict of at least one node.

    :param ctx: the controller's context.
    :param reachable: every checked node -> whether it answered ``SERVING`` in time.

    Called by the leader after the round; must be cheap (enqueue work, do not reconcile here).
    """
