"""The sandbox substrate end to end: 2 real kubelets + containerd + Debian's bridge CNI, up and down twice.

One cluster per module (the tests run in file order and share it). The second
cycle is brought up by another process that then exits without tearing down
(a "crash"), and is removed from this one: ``down()`` must work from the state
file alone.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core.errors import StartupError
from ovnk_lab import hostnet
from ovnk_lab import hostres
from ovnk_lab import paths
from ovnk_lab.cluster import BridgeCni
from ovnk_lab.cluster import LabCluster
from ovnk_lab.cluster import SandboxState
from ovnk_lab.images import echo_probe_command
from ovnk_lab.kubenode import SandboxNode
from ovnk_lab.procs import wait_for
from ovnk_lab.sandbox import datapath_crashes

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PREFIX = f"ovt{os.getpid() % 10000}"
NODES = ("node-1", "node-2")
ECHO_TCP, ECHO_UDP = 8080, 9090


# 172.30.x, apart from the e2e suite's and NodeLab's 172.31.x (other sandboxes may run on this machine).
SUBNET = hostnet.free_underlay_subnet([f"172.30.{third}.0/24" for third in range(100 + os.getpid() % 100, 255)])


@pytest.fixture(scope="module")
def workdir(lab_dir: Path) -> Path:
    return lab_dir / f"sb-{PREFIX}"


@pytest.fixture(scope="module")
def sysctls_before() -> dict[str, str | None]:
    return {name: hostres.read_sysctl(name) for name in hostres.KUBELET_SYSCTLS}


@pytest.fixture(scope="module")
def sandbox(workdir: Path, sysctls_before: dict[str, str | None]) -> Iterator[LabCluster]:
    messages: list[str] = []
    cluster = LabCluster(workdir, prefix=PREFIX, subnet=SUBNET, progress=messages.append)
    started = time.monotonic()
    cluster.up(len(NODES), cni=BridgeCni())
    print(f"\nsandbox up in {time.monotonic() - started:.1f}s: " + " | ".join(messages))
    yield cluster
    LabCluster(workdir, prefix=PREFIX, subnet=SUBNET).down()  # no-op when the last test already did it


def kubectl_apply(cluster: LabCluster, manifest: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=textwrap.dedent(manifest))


def pod_ip(cluster: LabCluster, name: str) -> str:
    return cluster.kubectl("get", "pod", name, "-o", "jsonpath={.status.podIP}").strip()


def retry(what: str, func: Callable[[], str], *, attempts: int = 5) -> str:
    """Probes over a fresh bridge may lose their first packet (ARP): try a few times."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return str(func())
        except StartupError as exc:
            last = exc
            time.sleep(1)
    raise AssertionError(f"{what} failed {attempts} times: {last}")


def test_nodes_ready_with_their_own_namespaces(sandbox: LabCluster) -> None:
    status = sandbox.status()
    assert status.running
    assert status.nodes == {name: True for name in NODES}
    assert all(alive for _, _, alive in status.processes), status.processes
    nodes = sandbox.nodes
    assert [n.name for n in nodes] == list(NODES)
    for index, node in enumerate(nodes, start=1):
        assert node.netns == f"{PREFIX}-{node.name}" and hostnet.netns_exists(node.netns)
        assert node.ip == str(ipaddress.IPv4Network(SUBNET).network_address + 10 + index)
        assert node.ovs_db_sock is None
        addresses = node.exec(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f"{node.ip}/24" in addresses
        # Its own mount namespace: /etc/cni/net.d inside the node is the node's directory.
        inside = node.exec(["ls", "/etc/cni/net.d"]).stdout.split()
        assert inside == sorted(p.name for p in node.cni_conf_dir.iterdir()) == ["10-sandbox-bridge.conflist"]
        assert os.stat(node.mount_ns_file).st_ino != os.stat("/proc/self/ns/mnt").st_ino
    # The control plane listens on the host's underlay address; node 2 reaches node 1's kubelet.
    assert status.api_server.startswith(f"https://{ipaddress.IPv4Network(SUBNET).network_address + 1}:")
    reach = nodes[1].exec(["timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{nodes[0].ip}/10250"], check=False)
    assert reach.returncode == 0, reach.stderr
    # The node lifecycle controller runs in the sandbox (the test bed's control plane disables it).
    kcm_log = Path(status.state_file).parent / "control-plane" / "log" / "kube-controller-manager.log"
    wait_for("the node lifecycle controller", lambda: 'Started "nodelifecycle"' in kcm_log.read_text(),
             timeout=60, interval=0.5)


def test_second_up_refused_while_running(sandbox: LabCluster) -> None:
    again = LabCluster(sandbox.workdir, prefix=PREFIX, subnet=SUBNET)
    with pytest.raises(StartupError, match="already running"):
        again.up(1)
    assert sandbox.status().running


def test_a_free_underlay_subnet_skips_the_running_sandboxs(sandbox: LabCluster) -> None:
    other = "172.30.99.0/24"  # below the range SUBNET is chosen from
    assert hostnet.free_underlay_subnet([SUBNET, other]) == other
    with pytest.raises(StartupError, match="in use"):
        hostnet.free_underlay_subnet([SUBNET])


def test_pods_run_exec_logs_and_echo_over_the_bridge(sandbox: LabCluster) -> None:
    for node in NODES:
        kubectl_apply(sandbox, f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: bb-{node}}}
            spec:
              nodeName: {node}
              automountServiceAccountToken: false
              terminationGracePeriodSeconds: 0
              containers:
              - {{name: bb, image: busybox, imagePullPolicy: Never,
                 command: [sh, -c, "echo busybox-started; exec sleep 3600"]}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: echo-{node}}}
            spec:
              nodeName: {node}
              automountServiceAccountToken: false
              terminationGracePeriodSeconds: 0
              containers:
              - {{name: echo, image: ovnk-test/echo, imagePullPolicy: Never,
                 args: ["{ECHO_TCP}/tcp", "{ECHO_UDP}/udp"]}}
            """)
    sandbox.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s", timeout=150)
    for node in NODES:
        client, server = f"bb-{node}", f"echo-{node}"
        server_ip = pod_ip(sandbox, server)
        assert ipaddress.IPv4Address(server_ip) in BridgeCni().subnet_for(sandbox.node(node))
        assert sandbox.kubectl("exec", client, "--", "hostname").strip() == client
        assert "busybox-started" in sandbox.kubectl("logs", client)
        assert f"listening on {ECHO_UDP}/udp" in sandbox.kubectl("logs", server)
        # TCP with busybox's own nc: an echoed line, then the hostname command.
        tcp = retry("tcp echo", functools.partial(
            sandbox.kubectl, "exec", client, "--", "sh", "-c",
            f"printf 'ping-{node}\\nhostname\\n' | nc {server_ip} {ECHO_TCP}"))
        assert tcp.split() == [f"ping-{node}", server]
        # UDP with the probe client (busybox 1.35's nc has no UDP).
        udp = retry("udp echo", functools.partial(
            sandbox.kubectl, "exec", client, "--", *echo_probe_command("udp", server_ip, ECHO_UDP, "hostname")))
        assert udp.strip() == server
        udp_echo = sandbox.kubectl("exec", client, "--", *echo_probe_command("udp", server_ip, ECHO_UDP, "data-1"))
        assert udp_echo.strip() == "data-1"
        client_ip = sandbox.kubectl("exec", client, "--", *echo_probe_command("tcp", server_ip, ECHO_TCP, "clientip"))
        assert client_ip.strip() == pod_ip(sandbox, client)
    assert port_forward_exchange(sandbox, "echo-node-1", ECHO_TCP, b"hostname\n") == b"echo-node-1\n"
    # A host command inside a pod's network namespace (for `ovnk sandbox exec ns/pod -- cmd`).
    netns = sandbox.pod_netns("default", "echo-node-2")
    assert netns.exists()
    inside = sandbox.exec_in_pod_netns("default", "echo-node-2", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
    assert pod_ip(sandbox, "echo-node-2") in inside


def port_forward_exchange(cluster: LabCluster, pod: str, port: int, payload: bytes) -> bytes:
    """kubectl port-forward (host loopback -> API server -> kubelet -> pod) and one TCP exchange."""
    proc = subprocess.Popen([paths.tool_bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "port-forward",
                             f"pod/{pod}", f":{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "kubectl port-forward printed nothing in 60s"
        line = proc.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert found, line
        with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=20) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _leftovers(state: SandboxState) -> list[str]:
    found = []
    found += [f"netns {n}" for n in hostnet.netns_with_prefix(state.prefix)]
    found += [f"process {p.name}({p.pid})" for p in state.processes if hostres.proc_alive(p)]
    found += [f"mount {m}" for m in hostres.mounts_under(Path(state.workdir))]
    found += [f"cgroup {c}" for c in state.cgroups if Path(c).exists()]
    found += [f"link {link}" for link in state.host_links if Path(f"/sys/class/net/{link}").exists()]
    found += [f"file {d}" for d in state.dirs if Path(d).exists()]
    return found


def _assert_sysctls_restored(before: dict[str, str | None], prefix: str) -> None:
    if hostres.HostRegistry().others(prefix):
        return  # another sandbox on this machine still runs a kubelet: the last one down restores them
    assert {name: hostres.read_sysctl(name) for name in before} == before


def test_down_leaves_nothing_and_up_again_with_ovs_from_another_process(
        sandbox: LabCluster, workdir: Path, sysctls_before: dict[str, str | None]) -> None:
    state = SandboxState.from_json(json.loads(sandbox.state_file.read_text()))
    assert state.sysctls  # saved before the kubelets started
    started = time.monotonic()
    sandbox.down()
    print(f"\nsandbox down in {time.monotonic() - started:.1f}s")
    assert _leftovers(state) == []
    assert not workdir.exists()
    _assert_sysctls_restored(sysctls_before, PREFIX)
    sandbox.down()  # twice is fine

    # Up again, with OVS and no CNI config (how the ovnk integration starts), in another process that
    # then exits without tearing down (a crash, as far as this process knows).
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from ovnk_lab.cluster import ExternalCni, LabCluster
        cluster = LabCluster(Path({str(workdir)!r}), prefix={PREFIX!r}, subnet={SUBNET!r})
        cluster.up(2, with_ovs=True, cni=ExternalCni())
        os._exit(0)
    """)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    print(f"second sandbox up (another process, with OVS) in {time.monotonic() - started:.1f}s")
    again = LabCluster(workdir, prefix=PREFIX, subnet=SUBNET)
    try:
        status = again.status()
        assert status.running and status.nodes == {name: False for name in NODES}  # registered, no CNI yet
        for node in again.nodes:
            assert node.ovs_db_sock is not None and node.ovs_db_sock.is_socket()
            wait_for(f"br-int on {node.name}", lambda node=node: "br-int" in node.ovs_vsctl("list-br"), timeout=30)
            assert node.ovs_vsctl("get", "Bridge", "br-int", "datapath_type").strip() == "netdev"
            if node.ovn.old_ovs:
                _assert_vswitchd_restarts_after_a_crash(node)
            else:
                _assert_vswitchd_runs_without_a_monitor(node, again)
            ids = node.ovs_vsctl("get", "Open_vSwitch", ".", "external_ids")
            assert f"system-id={node.name}" in ids and "ovn-remote" not in ids
            # Inside the node the standard socket path is the node's own OVS.
            assert node.exec([node.ovn.bin("ovs-vsctl"), "--timeout=10", "get", "Open_vSwitch", ".",
                              "external_ids:hostname"]).stdout.strip().strip('"') == node.name
            # What the ovnk node agent will do: run inside the node and write the CNI config.
            agent = node.start_process("agent", ["sleep", "600"])
            wait_for(f"agent in /{node.cgroup}/system", lambda pid=agent.pid, node=node: (
                f":/{node.cgroup}/system" in Path(f"/proc/{pid}/cgroup").read_text()), timeout=10)
            BridgeCni().install(node)
        wait_for("nodes Ready once a CNI config exists", lambda: again.status().nodes == {n: True for n in NODES},
                 timeout=60, interval=0.5)
        state = SandboxState.from_json(json.loads(again.state_file.read_text()))
        assert {p.name for p in state.processes} >= {f"{n}/{d}" for n in NODES
                                                     for d in ("ovs-vswitchd", "ovn-controller", "agent")}
    except BaseException:
        again.down()
        raise
    started = time.monotonic()
    again.down()
    print(f"second sandbox down in {time.monotonic() - started:.1f}s")
    assert _leftovers(state) == []
    assert not again.status().running
    _assert_sysctls_restored(sysctls_before, PREFIX)


def _assert_vswitchd_runs_without_a_monitor(node: SandboxNode, cluster: LabCluster) -> None:
    """A current OVS runs without --monitor (a crash there must fail the tests, not be restarted away):
    the pid the sandbox recorded is ovs-vswitchd itself, not a monitor process above it."""
    pid = int((node.ovs_dir / "run" / "ovs-vswitchd.pid").read_text())
    recorded = {name: pid for name, pid, alive in cluster.status().processes if alive}
    assert recorded[f"{node.name}/ovs-vswitchd"] == pid
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "ovs-vswitchd"


def _assert_vswitchd_restarts_after_a_crash(node: SandboxNode) -> None:
    """An aborted ovs-vswitchd (OVS 3.1.0's conntrack assertion, lab.md) is restarted by its monitor."""
    pidfile = node.ovs_dir / "run" / "ovs-vswitchd.pid"
    crashed = int(pidfile.read_text())
    os.kill(crashed, signal.SIGABRT)

    def restarted() -> bool:
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            return False
        return pid != crashed and Path(f"/proc/{pid}").exists()
    wait_for(f"ovs-vswitchd of {node.name} restarted after SIGABRT", restarted, timeout=30)
    # The e2e suite reports such crashes from the logs; this one is there.
    crashes = [line for line in datapath_crashes(node.ovs_dir) if f"pid {crashed} died" in line]
    assert crashes and "restarting" in crashes[0], datapath_crashes(node.ovs_dir)
    # Back in service: it applies a change again (ovs-vsctl waits for vswitchd's confirmation).
    node.ovs_vsctl("set", "Bridge", "br-int", "external_ids:crash-check=1")
    assert node.ovs_vsctl("get", "Bridge", "br-int", "external_ids:crash-check").strip().strip('"') == "1"


class FailingCni:
    """Fails on the second node, after the first one's namespaces, cgroup and mount namespace exist."""

    name = "failing"
    ready_without_agent = True

    def __init__(self) -> None:
        self.state_at_failure: dict[str, object] = {}

    def install(self, node: SandboxNode) -> None:
        if node.index == 2:
            self.state_at_failure = json.loads((node.dir.parents[1] / "state.json").read_text())
            raise RuntimeError("CNI install failed on purpose")
        BridgeCni().install(node)


def test_failed_up_removes_everything(workdir: Path, sysctls_before: dict[str, str | None]) -> None:
    cni = FailingCni()
    with pytest.raises(RuntimeError, match="on purpose"):
        LabCluster(workdir, prefix=PREFIX, subnet=SUBNET).up(2, cni=cni)
    state = SandboxState.from_json(cni.state_at_failure)
    assert len(state.netns) == 4 and state.mount_ns_files and state.cgroups  # it got that far
    assert _leftovers(state) == []
    assert not workdir.exists()
    _assert_sysctls_restored(sysctls_before, PREFIX)
