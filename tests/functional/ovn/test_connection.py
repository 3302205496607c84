"""OVSDB connections: RAFT leader changes, SSL remotes, timeouts, metrics."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ovnk.core.errors import StartupError
from ovnk.core.errors import TemporaryError
from ovnk.core.ovn import txn as txn_mod
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.connection import RECONNECT_BACKOFF_MS
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import SslFiles
from ovnk.core.ovn.txn import TxnManager
from ovnk_lab import paths
from ovnk_lab.kube import Pki
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.ovn import SslFiles as LabSsl
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import unix_socket_ready
from ovnk_lab.procs import wait_for
from tests.functional.ovn.conftest import CONTROLLER
from tests.functional.ovn.conftest import NODE_SWITCH
from tests.functional.ovn.conftest import POD_PORT


@pytest.fixture
def raft_central(lab_dir: Path):
    central = OvnCentral(lab_dir / f"raft-{uuid.uuid4().hex[:8]}", cluster=3)
    central.start()
    yield central
    central.destroy()


@pytest.mark.slow
def test_raft_leader_killed_during_1000_transactions(raft_central) -> None:
    registry = CollectorRegistry()
    client = OvsdbClient(remote=raft_central.nb_address, schema="OVN_Northbound", name="nb", timeout=30,
                         registry=registry).start()
    txns = TxnManager(client, pm=None, controller=CONTROLLER, timeout=30, registry=registry)
    try:
        with txns.transaction(reason="setup", owner="test") as txn:
            txn.ensure("Logical_Switch", name="node1", ids=NODE_SWITCH.ids(CONTROLLER, name="node1"))
        killed = threading.Event()
        outcomes = []

        def killer() -> None:
            while len(outcomes) < 300:
                time.sleep(0.01)
            raft_central.kill_leader(raft_central.nb)
            killed.set()

        thread = threading.Thread(target=killer)
        thread.start()
        started = time.monotonic()
        for i in range(1000):
            with txns.transaction(reason=f"pod {i}", owner="test") as txn:
                txn.ensure("Logical_Switch_Port", name=f"ns_p{i}", ids=POD_PORT.ids(CONTROLLER, name=f"ns_p{i}"),
                           columns={"addresses": [f"0a:58:0a:f4:{i // 256:02x}:{i % 256:02x}"]},
                           parent=Parent(Match.of("Logical_Switch", name="node1"), "ports"))
            outcomes.append(txn.outcome)
        thread.join()
        elapsed = time.monotonic() - started
        assert killed.is_set()
        # A transaction the dying leader applied but never acknowledged is retried; its commands then
        # find the row in place, so it ends "unchanged" instead of inserting a duplicate.
        assert set(outcomes) <= {"committed", "unchanged"} and outcomes.count("committed") >= 995
        names = [n for n in raft_central.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split() if n]
        assert len(names) == 1000 and len(set(names)) == 1000, "every port exactly once"
        assert client.reconnects >= 1
        # The configured backoff is in force (not the IDL's default of up to 8 s).
        fsm = client.idl._session.reconnect
        assert (fsm.get_min_backoff(), fsm.get_max_backoff()) == RECONNECT_BACKOFF_MS
        assert registry.get_sample_value("ovnk_ovsdb_nb_reconnects_total") is not None
        assert elapsed < 60
    finally:
        client.stop()


def test_a_transaction_aborted_by_a_reconnect_commits_once_the_idl_is_back(
        raft_central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconnect aborts a pending attempt (TRY_AGAIN); the transaction retries on the new
    connection once the IDL has resynced, and commits well within its timeout."""
    client = OvsdbClient(remote=raft_central.nb_address, schema="OVN_Northbound", name="nb", timeout=20).start()
    txns = TxnManager(client, pm=None, controller=CONTROLLER, timeout=20)
    try:
        with txns.transaction(reason="setup", owner="test") as txn:
            txn.ensure("Logical_Switch", name="node1", ids=NODE_SWITCH.ids(CONTROLLER, name="node1"))
        attempts = []
        real_pre_commit = txn_mod._Transaction.pre_commit

        def pre_commit(self: Any, ovs_txn: Any) -> None:
            real_pre_commit(self, ovs_txn)
            attempts.append(client.reconnects)
            if len(attempts) == 1:
                # Drop the connection before this attempt is sent (python-ovs' session, on the
                # connection thread): the send fails, the attempt ends TRY_AGAIN and no row changes.
                session = client.idl._session
                session.force_reconnect()
                session.run()

        monkeypatch.setattr(txn_mod._Transaction, "pre_commit", pre_commit)
        with txns.transaction(reason="after reconnect", owner="test") as txn:
            txn.ensure("Logical_Switch_Port", name="ns_after", ids=POD_PORT.ids(CONTROLLER, name="ns_after"),
                       parent=Parent(Match.of("Logical_Switch", name="node1"), "ports"))
        assert txn.outcome == "committed"
        assert len(attempts) >= 2 and client.reconnects > attempts[0], "the first attempt met a reconnect"
        assert "ns_after" in raft_central.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port")
    finally:
        client.stop()


def test_ssl_remote_with_client_certificates(lab_dir: Path) -> None:
    pki = Pki(lab_dir / f"ssl-{uuid.uuid4().hex[:8]}")
    server = pki.issue("ovsdb-server", cn="ovsdb-server", server=True, client=True, sans=["IP:127.0.0.1"])
    client_pair = pki.issue("ovnk", cn="ovnk-controller", client=True, server=True)
    central = OvnCentral(pki.dir / "central", ssl=LabSsl(ca_cert=pki.ca.cert, server_key=server.key,
                                                         server_cert=server.cert, client_key=client_pair.key,
                                                         client_cert=client_pair.cert))
    central.start()
    try:
        assert central.nb_address.startswith("ssl:")
        client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="nb", timeout=10,
                             ssl=SslFiles(private_key=str(client_pair.key), certificate=str(client_pair.cert),
                                          ca_cert=str(pki.ca.cert))).start()
        txns = TxnManager(client, pm=None, controller=CONTROLLER, timeout=10)
        with txns.transaction(reason="ssl", owner="test") as txn:
            txn.ensure("Logical_Switch", name="over-ssl", ids=NODE_SWITCH.ids(CONTROLLER, name="over-ssl"))
        assert "over-ssl" in central.nbctl("ls-list")
        client.stop()
    finally:
        central.destroy()


def test_unreachable_database_is_a_clear_startup_error(tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    with pytest.raises(StartupError, match=f"cannot reach the OVN_Northbound database at unix:{sock}"):
        OvsdbClient(remote=f"unix:{sock}", schema="OVN_Northbound", name="nb").start(timeout=0.5)


def test_commit_times_out_when_server_is_gone(ovn_central) -> None:
    client = OvsdbClient(remote=ovn_central.nb_address, schema="OVN_Northbound", name="nb", timeout=2).start()
    txns = TxnManager(client, pm=None, controller=CONTROLLER, timeout=2)
    try:
        ovn_central.nb.members[0].daemon.kill()
        started = time.monotonic()
        with pytest.raises((TemporaryError, RuntimeError)), txns.transaction(reason="t", owner="test") as txn:
            txn.ensure("Logical_Switch", name="late", ids=NODE_SWITCH.ids(CONTROLLER, name="late"))
        assert time.monotonic() - started < 10
    finally:
        client.stop()


def connection_lines(caplog: pytest.LogCaptureFixture, remote: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ovnk.core.ovn.connection" and remote in r.getMessage()
            and ("lost the connection" in r.getMessage() or "reconnected" in r.getMessage())]


def wait_lines(caplog: pytest.LogCaptureFixture, remote: str, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(connection_lines(caplog, remote)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return connection_lines(caplog, remote)


class LocalOvsDb:
    """A node's Open_vSwitch ovsdb-server (only the database: enough for a connection test)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        self.sock = workdir / "db.sock"
        self.db_name = "Open_vSwitch"
        db_file = workdir / "conf.db"
        subprocess.run([paths.ovs_bin("ovsdb-tool"), "create", str(db_file), paths.ovn_schema("vswitch")],
                       check=True)
        self.daemon = Daemon("ovsdb-server-ovs", [
            paths.ovs_bin("ovsdb-server"), str(db_file), f"--remote=punix:{self.sock}",
            f"--unixctl={workdir / 'db.ctl'}", f"--pidfile={workdir / 'db.pid'}"], log_path=workdir / "db.log")

    def start(self) -> None:
        self.daemon.start()
        wait_for("the Open_vSwitch database", lambda: unix_socket_ready(self.sock), timeout=15,
                 daemons=[self.daemon])


def test_outage_of_each_database_logs_one_disconnect_and_one_reconnect_with_the_down_time(
    ovn_central, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that goes away and comes back: one line when the connection is lost, one when it is
    back saying how long it was down (issue 24 D6), for the NB, the SB and a node's Open_vSwitch DB."""
    caplog.set_level("INFO", logger="ovnk.core.ovn.connection")
    ovs = LocalOvsDb(tmp_path / "ovs")
    ovs.start()
    clients = [OvsdbClient(remote=ovn_central.nb_address, schema="OVN_Northbound", name="nb", timeout=10).start(),
               OvsdbClient(remote=ovn_central.sb_address, schema="OVN_Southbound", name="sb", timeout=10).start(),
               OvsdbClient(remote=f"unix:{ovs.sock}", schema="Open_vSwitch", name="ovs", timeout=10).start()]

    def stop(index: int) -> None:
        (ovn_central.nb.members[0].daemon, ovn_central.sb.members[0].daemon, ovs.daemon)[index].stop()

    def restart(index: int) -> None:
        if index < 2:
            ovn_central.restart_member((ovn_central.nb, ovn_central.sb)[index], 0)
        else:
            ovs.start()

    try:
        for index, (db_name, client) in enumerate(zip(("OVN_Northbound", "OVN_Southbound", "Open_vSwitch"), clients,
                                                      strict=True)):
            stop(index)
            lines = wait_lines(caplog, client.remote, 1)
            assert len(lines) == 1 and "lost the connection" in lines[0], lines
            assert lines[0].startswith(f"{db_name} at {client.remote}: lost the connection"), lines[0]
            time.sleep(2.5)  # down for a while: the reconnect backoff retries meanwhile, silently
            assert len(connection_lines(caplog, client.remote)) == 1
            restart(index)
            lines = wait_lines(caplog, client.remote, 2)
            assert len(lines) == 2, lines
            prefix = f"{db_name} at {client.remote}: reconnected after "
            assert lines[1].startswith(prefix), lines[1]
            down = float(lines[1][len(prefix):].split(" ")[0].rstrip("s"))
            assert 2.5 <= down < 30, lines[1]
            time.sleep(1.5)
            assert len(connection_lines(caplog, client.remote)) == 2  # once each
    finally:
        for client in clients:
            client.stop()
        ovs.daemon.stop()
