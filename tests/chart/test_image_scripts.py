"""The image's scripts run for real: ovnk-lookup against the test bed's API server, and
ovnk-entrypoint starting standalone and 3-member RAFT OVN databases and ovn-northd.

Each "pod" is a set of processes with its own run and database directories
(OVN_RUNDIR, OVN_DBDIR) and its own pod IP; the members find each other through an
Endpoints object in a test namespace, as in the chart. Endpoints refuse loopback
addresses, so the pods run in a network namespace of their own holding the pod IPs
on a veth (the test bed's kernel has no dummy links); ovnk-lookup steps back into the test's namespace to reach the
API server.

The image installs Debian's OVS/OVN packages (hack/Containerfile), so the scripts run the
machine's Debian packages here too (``paths.system_install()``), with their schemas, not the
test bed's newer installation.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk_lab import paths

from .conftest import REPO
from .conftest import render

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

ENTRYPOINT = REPO / "hack" / "image" / "ovnk-entrypoint"
LOOKUP = REPO / "hack" / "image" / "ovnk-lookup"
TIMEOUT = 90.0
SERVICE = "ovn-db"


def wait_until(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def publish_members(kube_cp: Any, namespace: str, members: dict[str, str], service_name: str = SERVICE) -> None:
    """The Endpoints the headless Service of the chart would have: pod name -> pod IP.

    The Service has no selector, so the endpoints controller leaves these Endpoints to us
    (it deletes Endpoints that have no Service at all).
    """
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name, "namespace": namespace},
        "spec": {"clusterIP": "None", "ports": [{"name": "nb", "port": 6641}]},
    }
    kube_cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(service))
    endpoints = {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": service_name, "namespace": namespace},
        "subsets": [{
            "addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}}
                          for pod, ip in members.items()],
            "ports": [{"name": "nb", "port": 6641}],
        }],
    }
    kube_cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(endpoints))


def image_ovn() -> paths.OvnInstall:
    """The OVS/OVN the image has: Debian's packages."""
    found = paths.system_install()
    assert found is not None, "Debian's OVS/OVN packages are not installed; run hack/setup.sh"
    return found


def image_path() -> str:
    """PATH with the Debian packages' OVS/OVN first, as in the image."""
    return image_ovn().env()["PATH"]


def lookup_env(kube_cp: Any, namespace: str) -> dict[str, str]:
    return {"PATH": image_path(), "KUBECONFIG": str(kube_cp.kubeconfig), "POD_NAMESPACE": namespace,
            "OVN_DB_SERVICE": SERVICE}


def run_lookup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOOKUP), "members", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_lookup_lists_members_in_ordinal_order(kube_cp: Any, namespace: str) -> None:
    env = lookup_env(kube_cp, namespace)
    publish_members(kube_cp, namespace, {"db-2": "10.0.0.3", "db-10": "fd00::10", "db-0": "10.0.0.1"})
    found = run_lookup(env, "--port", "6641", "--min-count", "3", "--timeout", "30")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "tcp:10.0.0.1:6641,tcp:10.0.0.3:6641,tcp:[fd00::10]:6641"
    others = run_lookup(env, "--port", "6643", "--scheme", "ssl", "--exclude", "db-0", "--require", "db-2")
    assert others.stdout.strip() == "ssl:10.0.0.3:6643,ssl:[fd00::10]:6643"


def test_lookup_waits_then_fails_with_what_it_saw(kube_cp: Any, namespace: str) -> None:
    env = lookup_env(kube_cp, namespace)
    missing = run_lookup(env, "--port", "6641", "--timeout", "1")
    assert missing.returncode == 1
    assert f"Endpoints {namespace}/{SERVICE} list no members" in missing.stderr
    publish_members(kube_cp, namespace, {"db-1": "10.0.0.2"})
    short = run_lookup(env, "--port", "6641", "--require", "db-0", "--timeout", "1")
    assert short.returncode == 1
    assert "list ['db-1'], waited 1s for 1 member(s) including db-0" in short.stderr
    # A member listed while the lookup waits is picked up.
    waiting = subprocess.Popen([sys.executable, str(LOOKUP), "members", "--port", "6641", "--require", "db-0",
                                "--timeout", "60"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        publish_members(kube_cp, namespace, {"db-1": "10.0.0.2", "db-0": "10.0.0.1"})
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert out.strip() == "tcp:10.0.0.1:6641,tcp:10.0.0.2:6641"


class Pod:
    """The processes one database pod of the chart runs, started through ovnk-entrypoint."""

    def __init__(self, root: Path, name: str, ip: str, env: dict[str, str], netns: str) -> None:
        self.netns = netns
        self.name = name
        self.ip = ip
        self.run_dir = root / name / "run"
        self.db_dir = root / name / "db"
        self.env = {**env, "POD_NAME": name, "POD_IP": ip, "OVN_RUNDIR": str(self.run_dir),
                    "OVN_DBDIR": str(self.db_dir)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = root / name / "logs"
        self.logs.mkdir(parents=True)

    def start(self, command: str) -> None:
        with open(self.logs / f"{command}.log", "ab") as log:  # the child keeps its own descriptor
            self.procs.append(subprocess.Popen(self.in_netns("bash", str(ENTRYPOINT), command), env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def in_netns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def probe(self, target: str) -> bool:
        return subprocess.run(["bash", str(ENTRYPOINT), "probe", target], env=self.env, capture_output=True,
                              timeout=30, check=False).returncode == 0

    def ctl(self, tool: str, db: str, *args: str) -> str:
        # --no-leader-only: a RAFT follower forwards writes to the leader.
        return subprocess.run([image_ovn().bin(tool), "--no-leader-only", f"--db=unix:{self.run_dir}/ovn{db}_db.sock",
                               *args],
                              capture_output=True,
                              text=True, timeout=30, check=True).stdout

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(line for line in p.read_text(errors="replace").splitlines() if "raft" not in line)[-6000:] for p in self.logs.iterdir())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def pod_netns() -> Iterator[str]:
    """A network namespace with the pod IPs 10.89.0.1-3 on one end of a veth pair inside it."""
    name = f"ovnk-db-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        for command in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "pods", "type", "veth", "peer", "name", "pods-peer"],
                        *(["ip", "addr", "add", f"10.89.0.{i}/24", "dev", "pods"] for i in (1, 2, 3)),
                        ["ip", "link", "set", "pods", "up"], ["ip", "link", "set", "pods-peer", "up"]):
            subprocess.run(["ip", "netns", "exec", name, *command], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, timeout=30)


@pytest.fixture
def pods(kube_cp: Any, namespace: str, pod_netns: str) -> Iterator[Callable[..., Pod]]:
    root = Path(tempfile.mkdtemp(prefix="ovnk-db-", dir="/tmp"))  # short: unix socket paths
    made: list[Pod] = []
    # Distinct ports per test run: other sessions run OVSDB servers on this machine too.
    base = random.randrange(20000, 60000, 10)
    env = {**lookup_env(kube_cp, namespace), "OVN_NB_PORT": str(base), "OVN_SB_PORT": str(base + 1),
           "OVN_NB_RAFT_PORT": str(base + 2), "OVN_SB_RAFT_PORT": str(base + 3), "OVN_DB_LOOKUP_TIMEOUT": "60"}
    # ovnk-lookup with this interpreter (in the image its shebang names the image's venv), in the
    # test's own network namespace, where the API server listens.
    shim_dir = root / "bin"
    shim_dir.mkdir()
    lookup = shim_dir / "ovnk-lookup"
    lookup.write_text(f'#!/bin/sh\nexec nsenter --net=/proc/{os.getpid()}/ns/net -- {sys.executable} {LOOKUP} "$@"\n')
    lookup.chmod(0o755)
    env["OVNK_LOOKUP"] = str(lookup)

    def make(name: str, ip: str, **extra: str) -> Pod:
        pod = Pod(root, name, ip, {**env, **extra}, pod_netns)
        made.append(pod)
        return pod

    yield make
    for pod in made:
        pod.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_standalone_databases_and_northd(pods: Callable[..., Pod], kube_cp: Any, namespace: str) -> None:
    pod = pods("db-0", "10.89.0.1", OVN_DB_MODE="standalone", OVN_DB_REPLICAS="1")
    publish_members(kube_cp, namespace, {"db-0": "10.89.0.1"})
    for command in ("ovn-nb", "ovn-sb", "ovn-northd"):
        pod.start(command)
    wait_until("NB and SB answering", lambda: pod.probe("ovn-nb") and pod.probe("ovn-sb"))
    wait_until("northd alive", lambda: pod.probe("ovn-northd"))
    pod.ctl("ovn-nbctl", "nb", "ls-add", "sw0")
    # northd turns the logical switch into a Southbound datapath: the pod's processes are wired.
    wait_until("the Southbound datapath of sw0",
               lambda: "sw0" in pod.ctl("ovn-sbctl", "sb", "--columns=external_ids", "list", "Datapath_Binding"))
    # Clients reach the databases on the pod IP and port the chart publishes.
    nb_port = pod.env["OVN_NB_PORT"]
    remote = subprocess.run(pod.in_netns(image_ovn().bin("ovn-nbctl"), f"--db=tcp:10.89.0.1:{nb_port}", "ls-list"), capture_output=True,
                            text=True, timeout=30, check=True).stdout
    assert "sw0" in remote


def test_raft_members_form_one_cluster_whatever_order_they_start_in(
    pods: Callable[..., Pod], kube_cp: Any, namespace: str
) -> None:
    members = {f"db-{i}": f"10.89.0.{1 + i}" for i in range(3)}
    publish_members(kube_cp, namespace, members)
    pod = {name: pods(name, ip, OVN_DB_MODE="raft", OVN_DB_REPLICAS="3") for name, ip in members.items()}
    # Members 1 and 2 first: they join towards member 0, which must still create the cluster
    # (joining members serve the database but are not connected, so they must not count).
    for name in ("db-1", "db-2", "db-0"):
        pod[name].start("ovn-nb")
        time.sleep(0.5)

    def all_members() -> bool:
        return all(p.probe("ovn-nb") for p in pod.values())

    try:
        wait_until("three NB cluster members", all_members)
    except AssertionError:
        raise AssertionError("\n".join(p.log_text() for p in pod.values())) from None
    status = subprocess.run([image_ovn().bin("ovs-appctl"), "-t", f"{pod['db-0'].run_dir}/ovnnb_db.ctl", "cluster/status",
                             "OVN_Northbound"], capture_output=True, text=True, timeout=30, check=True).stdout
    raft_port = pod["db-0"].env["OVN_NB_RAFT_PORT"]
    for ip in members.values():
        assert f"tcp:{ip}:{raft_port}" in status
    # One database: a write on member 2 is read on member 0.
    pod["db-2"].ctl("ovn-nbctl", "nb", "ls-add", "replicated")
    wait_until("the write on member 0", lambda: "replicated" in pod["db-0"].ctl("ovn-nbctl", "nb", "ls-list"))
    log = (pod["db-0"].logs / "ovn-nb.log").read_text()
    assert "creating the OVN_Northbound cluster" in log
    assert "joining the OVN_Northbound cluster" in (pod["db-1"].logs / "ovn-nb.log").read_text()

    # Member 0 loses its data and comes back: it must join the running cluster, not create a second one.
    first = pod["db-0"]
    first.stop()
    first.procs.clear()
    os.unlink(first.db_dir / "ovnnb_db.db")
    first.start("ovn-nb")
    try:
        wait_until("member 0 back in the cluster", lambda: first.probe("ovn-nb"))
        wait_until("member 0 has the data", lambda: "replicated" in first.ctl("ovn-nbctl", "nb", "ls-list"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{first.log_text()}") from None
    assert "a OVN_Northbound cluster already serves" in (first.logs / "ovn-nb.log").read_text()


def chart_env(container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet would set it (fieldRefs from ``fields``)."""
    return {e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in container["env"]}


@pytest.mark.parametrize("ssl", [False, True], ids=["tcp", "ssl"])
def test_controller_and_node_containers_start_ovnk_with_the_database_addresses(
    kube_cp: Any, namespace: str, tmp_path: Path, ssl: bool
) -> None:
    """The entry point, run with the environment the chart gives each container, looks the
    members up and starts ovnk with them (a stand-in ``ovnk`` prints what it was given)."""
    rendered = render({"ovnDb": {"mode": "raft", "ssl": {"enabled": ssl}}}, namespace=namespace)
    service = rendered.one("Service", "-ovn-db")["metadata"]["name"]
    publish_members(kube_cp, namespace, {f"ovnk-ovn-db-{i}": f"10.89.0.{1 + i}" for i in range(3)},
                    service_name=service)
    stand_in = tmp_path / "ovnk"
    stand_in.write_text('#!/bin/sh\necho "args=$*"\necho "nb=$OVNK_OVNNORTH_ADDRESS"\n'
                        'echo "sb=$OVNK_OVNSOUTH_ADDRESS"\necho "node=${OVNK_NODE_NAME:-}"\n')
    lookup = tmp_path / "ovnk-lookup"
    lookup.write_text(f'#!/bin/sh\nexec {sys.executable} {LOOKUP} "$@"\n')
    for script in (stand_in, lookup):
        script.chmod(0o755)
    ovs_run = tmp_path / "ovs"  # the node container waits for OVS's socket
    ovs_run.mkdir()
    with socket.socket(socket.AF_UNIX) as ovs_db:
        ovs_db.bind(str(ovs_run / "db.sock"))
        scheme = "ssl" if ssl else "tcp"
        for owner, suffix, name in [("Deployment", "-controller", "controller"), ("DaemonSet", "-node", "node")]:
            container = rendered.containers(owner, suffix)[name]
            assert container["command"][0] == "/usr/local/bin/ovnk-entrypoint"  # hack/image/, in the image
            fields = {"metadata.namespace": namespace, "metadata.name": f"{name}-x1", "status.podIP": "10.89.0.9",
                      "spec.nodeName": "worker-1"}
            env = {**chart_env(container, fields), "PATH": image_path(), "KUBECONFIG": str(kube_cp.kubeconfig),
                   "OVNK_LOOKUP": str(lookup), "OVNK": str(stand_in), "OVS_RUNDIR": str(ovs_run)}
            proc = subprocess.run(["bash", str(ENTRYPOINT), *container["command"][1:]], env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr
            lines = dict(line.split("=", 1) for line in proc.stdout.splitlines())
            assert lines["args"] == name
            assert lines["nb"] == ",".join(f"{scheme}:10.89.0.{i}:6641" for i in (1, 2, 3))
            assert lines["sb"] == ",".join(f"{scheme}:10.89.0.{i}:6642" for i in (1, 2, 3))
            assert lines["node"] == ("worker-1" if name == "node" else "")
        # What an operator runs in a controller pod: ovnk trace with the same addresses.
        container = rendered.containers("Deployment", "-controller")["controller"]
        fields = {"metadata.namespace": namespace, "metadata.name": "controller-x1", "status.podIP": "10.89.0.9"}
        env = {**chart_env(container, fields), "PATH": os.environ["PATH"], "KUBECONFIG": str(kube_cp.kubeconfig),
               "OVNK_LOOKUP": str(lookup), "OVNK": str(stand_in), "OVS_RUNDIR": str(ovs_run)}
        proc = subprocess.run(["bash", str(ENTRYPOINT), "trace", "ns/a", "ns/b", "--json"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        lines = dict(line.split("=", 1) for line in proc.stdout.splitlines())
        assert lines["args"] == "trace ns/a ns/b --json"
        assert lines["sb"] == ",".join(f"{scheme}:10.89.0.{i}:6642" for i in (1, 2, 3))


def test_tls_by_default_and_node_certificates_reach_only_the_southbound_as_ovn_controller(
    pods: Callable[..., Pod], kube_cp: Any, namespace: str, tmp_path: Path
) -> None:
    """The chart's default PKI (generated by helm) on real ovsdb-servers started by the entry point:
    the controller's certificate writes the Northbound; a node's chassis certificate, issued by the
    node agent's code with the node CA, cannot reach the Northbound at all and may change in the
    Southbound only what OVN's ovn-controller role gives its own chassis (issue 24, secure defaults)."""
    from ovnk.core.node.chassis_tls import ensure_chassis_certificate

    rendered = render(namespace=namespace)  # no values: TLS is the default
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in d["data"].items()}
               for d in rendered.of_kind("Secret")}
    assert set(secrets) == {"ovnk-ovn-ca", "ovnk-ovn-ca-key", "ovnk-ovn-server", "ovnk-ovn-client", "ovnk-ovn-node-ca"}
    files: dict[str, str] = {}
    for secret, key, name in [("ovnk-ovn-ca", "ca.crt", "ca.crt"), ("ovnk-ovn-server", "tls.key", "server.key"),
                              ("ovnk-ovn-server", "tls.crt", "server.crt"), ("ovnk-ovn-client", "tls.key", "ctl.key"),
                              ("ovnk-ovn-client", "tls.crt", "ctl.crt"), ("ovnk-ovn-node-ca", "tls.crt", "node-ca.crt"),
                              ("ovnk-ovn-node-ca", "tls.key", "node-ca.key")]:
        (tmp_path / name).write_bytes(secrets[secret][key])
        files[name] = str(tmp_path / name)
    # What the chart hands each database container.
    db_env = {name: {e["name"]: e.get("value") for e in c["env"]}
              for name, c in rendered.containers("StatefulSet", "-ovn-db").items() if name != "northd"}
    assert db_env["nb-ovsdb"]["OVN_DB_SCHEME"] == db_env["sb-ovsdb"]["OVN_DB_SCHEME"] == "ssl"
    assert "OVN_SSL_NODE_CA" in db_env["sb-ovsdb"] and "OVN_SSL_NODE_CA" not in db_env["nb-ovsdb"]
    node_volumes = {v["name"]: v["secret"]["secretName"]
                    for v in rendered.one("DaemonSet", "-node")["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert set(node_volumes.values()) == {"ovnk-ovn-ca", "ovnk-ovn-node-ca"}  # never the controller's, never the CA key

    pod = pods("db-0", "10.89.0.1", OVN_DB_MODE="standalone", OVN_DB_REPLICAS="1", OVN_DB_SCHEME="ssl",
               OVN_SSL_KEY=files["server.key"], OVN_SSL_CERT=files["server.crt"], OVN_SSL_CA=files["ca.crt"],
               OVN_SSL_NODE_CA=files["node-ca.crt"])
    publish_members(kube_cp, namespace, {"db-0": "10.89.0.1"})
    for command in ("ovn-nb", "ovn-sb", "ovn-northd"):
        pod.start(command)
    wait_until("NB and SB answering", lambda: pod.probe("ovn-nb") and pod.probe("ovn-sb"))
    wait_until("the Southbound's role-restricted listener",
               lambda: 'role="ovn-controller"' in pod.ctl("ovn-sbctl", "sb", "get-connection"))
    # ovn-northd writes the role's permissions; until then the role allows nothing at all.
    wait_until("the ovn-controller role's permissions", lambda: {"Chassis", "Encap"} <= set(
        pod.ctl("ovn-sbctl", "sb", "--bare", "--columns=table", "list", "RBAC_Permission").split()))
    chassis = ensure_chassis_certificate(ca_cert=files["node-ca.crt"], ca_key=files["node-ca.key"],
                                         chassis="chassis-1", directory=str(tmp_path / "chassis"))
    nb = f"ssl:10.89.0.1:{pod.env['OVN_NB_PORT']}"
    sb = f"ssl:10.89.0.1:{pod.env['OVN_SB_PORT']}"

    def client(tool: str, remote: str, key: str, cert: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pod.in_netns(tool, f"--db={remote}", "--timeout=5", "-p", key, "-c", cert,
                                           "-C", files["ca.crt"], *args),
                              capture_output=True, text=True, timeout=60, check=False)

    def wait_written(tool: str, remote: str, key: str, cert: str, *args: str) -> subprocess.CompletedProcess[str]:
        # The listener may still be coming up: retry a little, then report the last attempt.
        done = client(tool, remote, key, cert, *args)
        deadline = time.monotonic() + 30
        while done.returncode != 0 and "RBAC" not in done.stderr and time.monotonic() < deadline:
            time.sleep(0.5)
            done = client(tool, remote, key, cert, *args)
        return done

    controller = (files["ctl.key"], files["ctl.crt"])
    node = (str(chassis.key), str(chassis.cert))
    written = wait_written("ovn-nbctl", nb, *controller, "ls-add", "by-controller")
    assert written.returncode == 0, written.stderr
    refused = client("ovn-nbctl", nb, *node, "ls-add", "by-node")
    assert refused.returncode != 0
    assert pod.ctl("ovn-nbctl", "nb", "ls-list").count("by-") == 1, "a node certificate wrote the Northbound"
    # The Southbound: its own chassis yes, another chassis or central tables no.
    own = wait_written("ovn-sbctl", sb, *node, "chassis-add", "chassis-1", "geneve", "10.89.0.5")
    assert own.returncode == 0, own.stderr
    other = client("ovn-sbctl", sb, *node, "chassis-add", "chassis-2", "geneve", "10.89.0.6")
    assert other.returncode != 0 and "RBAC" in other.stderr, other.stderr
    central = client("ovn-sbctl", sb, *node, "set", "SB_Global", ".", "options:hijacked=true")
    assert central.returncode != 0 and "RBAC" in central.stderr, central.stderr
    chassis_rows = pod.ctl("ovn-sbctl", "sb", "--bare", "--columns=name", "list", "Chassis").split()
    assert chassis_rows == ["chassis-1"]
    assert "hijacked" not in pod.ctl("ovn-sbctl", "sb", "get", "SB_Global", ".", "options")
