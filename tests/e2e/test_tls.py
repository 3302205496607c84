"""OVN databases over TLS only: certificates made by the sandbox, every client authenticated.

A 2-node sandbox of this module's own with ``SandboxOptions(ssl=True)``: NB and
SB serve ``pssl:`` on the underlay host address; the controller, the node
agents and each node's ovn-controller (SSL table of the node's OVS DB) connect
with client certificates. Pods on both nodes reach each other, and the DB port
answers nobody who does not speak TLS with a certificate of the sandbox's CA.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import paths
from ovnk_lab.kube import Pki
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions
from tests.e2e.conftest import Cluster
from tests.e2e.support import own_sandbox
from tests.e2e.support import unreachable

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[Cluster]:
    with own_sandbox("tls", SandboxOptions(nodes=2, ssl=True)) as box:
        yield Cluster(box)


def list_dbs(remote: str, *pki: str) -> subprocess.CompletedProcess[str]:
    """``ovsdb-client list-dbs`` against ``remote`` (``-p/-c/-C`` files in ``pki`` for ssl:)."""
    return subprocess.run([paths.ovs_bin("ovsdb-client"), "--timeout=10", *pki, "list-dbs", remote],
                          capture_output=True, text=True, timeout=30, check=False)


def client_files(box: Sandbox, name: str, ca: Path | None = None) -> list[str]:
    return [f"--private-key={box.pki_dir / f'{name}.key'}", f"--certificate={box.pki_dir / f'{name}.crt'}",
            f"--ca-cert={ca or box.pki_dir / 'ca.crt'}"]


def test_components_use_tls_and_pods_on_both_nodes_reach_each_other(tls_cluster: Cluster) -> None:
    cluster = tls_cluster
    box = cluster.sandbox
    host_ip = box.cluster.underlay.host_ip
    for kind in ("nb", "sb"):
        assert box.db_remote(kind).startswith(f"ssl:{host_ip}:"), box.db_remote(kind)
    for node in box.cluster.nodes:
        assert node.ovs_vsctl("get", "Open_vSwitch", ".", "external_ids:ovn-remote").strip('"\n') == box.db_remote("sb")
        assert node.ovs_vsctl("get-ssl").count(str(box.pki_dir / f"node-{node.name}")) == 2
    # Each ovn-controller registered its chassis, over its only (TLS) SB connection.
    assert box.central is not None
    chassis = box.central.sbctl("--bare", "--columns=hostname", "list", "Chassis").split()
    assert sorted(chassis) == sorted(cluster.nodes)

    ns = cluster.namespace()
    node1, node2 = cluster.nodes
    pods = cluster.run_pods(ns, [{"name": "one", "node": node1}, {"name": "two", "node": node2}])
    ips = {name: pod["status"]["podIP"] for name, pod in pods.items()}
    assert unreachable(cluster, ns, "one", [ips["two"]]) == []
    assert unreachable(cluster, ns, "two", [ips["one"]]) == []


def test_the_database_port_speaks_tls_only_and_wants_a_certificate_of_the_ca(tls_cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    box = tls_cluster.sandbox
    for kind, db_name in (("nb", "OVN_Northbound"), ("sb", "OVN_Southbound")):
        remote = box.db_remote(kind)
        # With the sandbox's client certificate the port answers (so the failures below are not "nothing there").
        good = list_dbs(remote, *client_files(box, "admin"))
        assert good.returncode == 0 and db_name in good.stdout.split(), good.stderr
        # Plain TCP to the same port: no OVSDB answer.
        plain = list_dbs(remote.replace("ssl:", "tcp:", 1))
        assert plain.returncode != 0 and db_name not in plain.stdout, plain.stdout
        # TLS with a certificate from another CA: refused.
        stranger = Pki(tmp_path / f"other-{kind}").issue("intruder", cn="intruder", client=True)
        foreign = list_dbs(remote, f"--private-key={stranger.key}", f"--certificate={stranger.cert}",
                           f"--ca-cert={box.pki_dir / 'ca.crt'}")
        assert foreign.returncode != 0 and db_name not in foreign.stdout, foreign.stdout
