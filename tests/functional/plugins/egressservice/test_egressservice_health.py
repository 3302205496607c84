"""EgressService hosts checked by EgressIP's health checks, through the hooks EgressIP publishes.

The nodes are not egress-assignable: they are checked only because
EgressService names them (``ovnk_egressip_health_targets``), and the service
moves when EgressIP reports a verdict change (``ovnk_egressip_health_changed``).
The health servers listen on loopback addresses standing in for node addresses.
"""

from __future__ import annotations

import json
import uuid

import pytest

from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.plugins.egressip.health import HealthServer
from ovnk.plugins.egressservice.controller import EGRESSSERVICES
from ovnk_lab.procs import free_port
from tests.functional.plugins.egressservice.test_egressservice_rows import crds  # noqa: F401
from tests.functional.plugins.egressservice.test_egressservice_rows import create_egressservice
from tests.functional.plugins.egressservice.test_egressservice_rows import create_service
from tests.functional.plugins.egressservice.test_egressservice_rows import set_ingress
from tests.functional.plugins.egressservice.test_egressservice_rows import set_ready
from tests.functional.plugins.egressservice.test_egressservice_rows import status
from tests.functional.plugins.egressservice.test_egressservice_rows import wait_for
from tests.functional.topology.conftest import ClusterEnv

pytestmark = [pytest.mark.kube, pytest.mark.ovn]


def test_a_host_that_stops_answering_loses_its_service(env: ClusterEnv, crds: None) -> None:  # noqa: F811
    port = free_port()
    env.start_controller("plugins.enabled=egressservice,egressip", "egressip.reachability-interval=0.5",
                         "egressip.reachability-total-timeout=0.3", f"egressip.node-healthcheck-port={port}")
    servers = {"hc-1": HealthServer(f"127.0.0.2:{port}"), "hc-2": HealthServer(f"127.0.0.3:{port}")}
    for server in servers.values():
        server.start()
    try:
        for index, (name, address) in enumerate((("hc-1", "127.0.0.2"), ("hc-2", "127.0.0.3"))):
            env.create_node(name, index)
            env.client.patch(NODES, name, {"metadata": {"annotations": {
                "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{address}/8"})}}})
            set_ready(env, name, True)
        ns = f"t-es-{uuid.uuid4().hex[:6]}"
        env.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        create_service(env, ns)
        set_ingress(env, ns, "172.30.0.220")
        create_egressservice(env, ns, {"sourceIPBy": "LoadBalancerIP"})
        wait_for("host hc-1", lambda: status(env, ns).get("host") == "hc-1")
        servers["hc-1"].stop()
        wait_for("moved to the node that answers", lambda: status(env, ns).get("host") == "hc-2")
        assert env.metric("ovnk_egressip_unreachable_nodes") == 1, "hc-1 was checked though not egress-assignable"
        servers["hc-2"].stop()
        wait_for("no host while nobody answers", lambda: "host" not in status(env, ns))
        message = status(env, ns)["conditions"][0]["message"]
        assert message == "no node can host it: hc-1, hc-2 does not answer its health check"
        servers["hc-2"] = HealthServer(f"127.0.0.3:{port}")
        servers["hc-2"].start()
        wait_for("back on the node that answers again", lambda: status(env, ns).get("host") == "hc-2")
        env.client.delete(EGRESSSERVICES, "web", namespace=ns)
    finally:
        for server in servers.values():
            server.stop()
