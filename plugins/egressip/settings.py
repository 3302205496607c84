"""The ``[egressip]`` settings section (ovn-kubernetes' ``egressip-*`` options)."""

from __future__ import annotations

from dataclasses import dataclass

from ovnk import setting


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 (disabled) or more"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a TCP port (1-65535)"


@dataclass(frozen=True)
class EgressIPSettings:
    """How egress nodes are checked (upstream: ``egressip-reachability-total-timeout``,
    ``egressip-node-healthcheck-port``)."""

    reachability_total_timeout: float = setting(
        1.0, check=_non_negative,
        help="seconds one health check of an egress node may take; 0 disables the checks")
    reachability_interval: float = setting(
        5.0, check=_positive, help="seconds between two health checks of every egress node")
    node_healthcheck_port: int = setting(
        9107, check=_port, help="TCP port of the node agent's gRPC health service (grpc.health.v1)")
