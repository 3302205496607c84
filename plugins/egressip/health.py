"""Egress node health: the node agent serves ``grpc.health.v1``, the controller checks it.

Upstream ovnkube-node serves the standard gRPC health service on port 9107
(``egressip-node-healthcheck-port``) and cluster-manager calls ``Check`` on
every egress-assignable node every 5 s with a total timeout of 1 s; a node that
does not answer ``SERVING`` in time is unreachable and loses its egress IPs.
This is the same protocol (grpcio and grpcio-health-checking, the gRPC
project's own libraries), so a killed or hung agent makes its node
unreachable, which a plain TCP probe of the node would not notice.

The agent listens on its node's primary address and the controller dials that
address (upstream dials the management-port IP; here the controller may run
where the pod network is not routed, e.g. on the sandbox host).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

#: The service name checked ("" is the server as a whole, as upstream checks it).
SERVICE = ""


class HealthServer:
    """A ``grpc.health.v1`` server answering ``SERVING`` while the agent runs (a node manager).

    :param address: where to listen (``<node IP>:<port>``).
    """

    name = "egressip.health"

    def __init__(self, address: str) -> None:
        self.address = address
        self._server: Any = None
        self.port = 0

    def start(self) -> None:
        import grpc
        from grpc_health.v1 import health
        from grpc_health.v1 import health_pb2
        from grpc_health.v1 import health_pb2_grpc

        server = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="egressip-health"))
        servicer = health.HealthServicer()
        servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self.port = server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.address} for the EgressIP health service")
        server.start()
        self._server = server
        logger.info("EgressIP health service (grpc.health.v1) listening on %s", self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` (the node agent runs this in a thread of its own)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()


def check(address: str, *, timeout: float) -> bool:
    """One ``Check`` call: ``True`` when the server answers ``SERVING`` within ``timeout`` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2
    from grpc_health.v1 import health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout)
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def check_all(targets: Mapping[str, str], *, timeout: float, check_one: Any = check) -> dict[str, bool]:
    """Check every ``node -> address`` at once (the round takes about ``timeout`` at most)."""
    results: dict[str, bool] = {}
    if not targets:
        return results
    with ThreadPoolExecutor(max_workers=min(16, len(targets)), thread_name_prefix="egressip-check") as pool:
        futures = {node: pool.submit(check_one, address, timeout=timeout) for node, address in targets.items()}
        for node, future in futures.items():
            try:
                results[node] = bool(future.result())
            except Exception:
                logger.exception("health check of node %s failed unexpectedly", node)
                results[node] = False
    return results


def address_of(ip: Any, port: int) -> str:
    """``host:port`` for gRPC (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if getattr(ip, "version", 4) == 6 else f"{ip}:{port}"


def unreachable(results: Mapping[str, bool]) -> Iterable[str]:
    return sorted(node for node, ok in results.items() if not ok)
