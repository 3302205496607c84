"""An OVN central: NB and SB ovsdb-servers (standalone or 3-member RAFT) and ovn-northd.

Everything lives in one work directory; daemons run in the foreground under
:class:`~ovnk_lab.procs.Daemon`. Typical start-up is ~0.2 s standalone. Every
program and schema comes from one OVS/OVN installation (:mod:`ovnk_lab.paths`):
the chosen one unless ``install`` names another (e.g. Debian 12's OVN 23.03).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk_lab import paths
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import free_port
from ovnk_lab.procs import run
from ovnk_lab.procs import tcp_ready
from ovnk_lab.procs import unix_socket_ready
from ovnk_lab.procs import wait_for


@dataclass(frozen=True)
class SslFiles:
    """PEM files for ssl: remotes (server side and client side share one CA)."""

    ca_cert: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path


def ovs_env(workdir: Path, install: paths.OvnInstall | None = None) -> dict[str, str]:
    """Environment that keeps OVS/OVN tools and daemons inside ``workdir``, ``install`` first on ``PATH``."""
    env = (install or paths.ovn_install()).env()
    for prefix in ("OVS", "OVN"):
        env[f"{prefix}_RUNDIR"] = str(workdir / "run")
        env[f"{prefix}_DBDIR"] = str(workdir / "db")
        env[f"{prefix}_LOGDIR"] = str(workdir / "log")
        env[f"{prefix}_SYSCONFDIR"] = str(workdir / "etc")
    return env


@dataclass
class DbMember:
    """One ovsdb-server process serving one database (a RAFT member or standalone)."""

    db_name: str  # OVN_Northbound / OVN_Southbound
    index: int
    db_file: Path
    sock: Path
    ctl: Path
    client_port: int | None
    raft_port: int | None
    daemon: Daemon


#: NB_Global columns that ovn-northd (not a CMS) writes: the --wait=sb/hv acknowledgements.
_NORTHD_NB_GLOBAL_COLUMNS = frozenset({"sb_cfg", "sb_cfg_timestamp", "hv_cfg", "hv_cfg_timestamp",
                                       "nb_cfg_timestamp"})


def _northd_bookkeeping(record: dict[str, Any]) -> bool:
    tables = {k: v for k, v in record.items() if not k.startswith("_")}
    if set(tables) != {"NB_Global"}:
        return False
    return all(isinstance(row, dict) and set(row) <= _NORTHD_NB_GLOBAL_COLUMNS for row in tables["NB_Global"].values())


@dataclass
class OvnDb:
    """One OVN database (NB or SB) made of one or three members."""

    kind: str  # "nb" / "sb"
    members: list[DbMember] = field(default_factory=list)
    ssl: bool = False
    listen_address: str = "127.0.0.1"

    @property
    def db_name(self) -> str:
        return "OVN_Northbound" if self.kind == "nb" else "OVN_Southbound"

    def mark(self) -> int:
        """Where the first member's file ends now: :meth:`writes_since` reads what comes after."""
        return self.members[0].db_file.stat().st_size

    def writes_since(self, mark: int) -> list[dict[str, Any]]:
        """The transactions appended to a standalone database's file after ``mark``, except
        ovn-northd's own bookkeeping in NB_Global (``sb_cfg``, ``hv_cfg`` and their timestamps),
        which it writes on its own schedule after any ``--wait`` sync: "nothing was written" means
        this list is empty, and when it is not, it says what was written.
        """
        if len(self.members) != 1:
            raise ValueError("writes_since reads a standalone database's file (RAFT logs are framed differently)")
        data = self.members[0].db_file.read_bytes()
        if len(data) < mark:
            raise ValueError(f"{self.members[0].db_file} shrank below {mark} bytes: ovsdb-server compacted it")
        data = data[mark:]
        records = []
        # Each record: a header line "OVSDB JSON <length> <sha1>" and that many bytes of JSON.
        while data:
            header, _, rest = data.partition(b"\n")
            parts = header.split()
            if len(parts) != 4 or parts[:2] != [b"OVSDB", b"JSON"]:
                raise ValueError(f"not a record header at offset {mark}: {header[:80]!r}")
            length = int(parts[2])
            records.append(json.loads(rest[:length]))
            data = rest[length:].lstrip(b"\n")
            mark += len(header) + 1 + length
        return [r for r in records if not _northd_bookkeeping(r)]

    @property
    def unix_address(self) -> str:
        return f"unix:{self.members[0].sock}"

    @property
    def tcp_address(self) -> str:
        scheme = "ssl" if self.ssl else "tcp"
        return ",".join(f"{scheme}:{self.listen_address}:{m.client_port}" for m in self.members if m.client_port)

    @property
    def address(self) -> str:
        """The address clients should use: the TCP/SSL list when served, else the unix socket."""
        return self.tcp_address or self.unix_address


class OvnCentral:
    """NB + SB + northd in ``workdir``.

    :param workdir: directory for db/run/log files.
    :param cluster: 1 for standalone databases, 3 for a RAFT cluster of each.
    :param tcp: also serve TCP (always on for RAFT, whose clients need a member list).
    :param ssl: serve SSL instead of TCP with these files.
    :param listen_address: the address the TCP/SSL client ports bind to (a sandbox's
        underlay host address makes them reachable from its nodes' network namespaces);
        RAFT members always talk to each other on 127.0.0.1.
    :param install: the OVS/OVN installation to run (default: :func:`ovnk_lab.paths.ovn_install`).
    """

    def __init__(self, workdir: Path, *, cluster: int = 1, tcp: bool = False, ssl: SslFiles | None = None,
                 listen_address: str = "127.0.0.1", install: paths.OvnInstall | None = None) -> None:
        if cluster not in (1, 3):
            raise ValueError("cluster must be 1 or 3")
        self.workdir = workdir
        self.cluster = cluster
        self.tcp = tcp or cluster > 1 or ssl is not None
        self.ssl = ssl
        self.listen_address = listen_address
        self.install = install or paths.ovn_install()
        self.env = ovs_env(workdir, self.install)
        self.nb = OvnDb("nb", ssl=ssl is not None, listen_address=listen_address)
        self.sb = OvnDb("sb", ssl=ssl is not None, listen_address=listen_address)
        self.northd: Daemon | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OvnCentral:
        for sub in ("db", "run", "log", "etc"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for db in (self.nb, self.sb):
            self._create(db)
        for db in (self.nb, self.sb):
            for member in db.members:
                member.daemon.start()
        for db in (self.nb, self.sb):
            for member in db.members:
                self._wait_member(db, member)
        if self.cluster > 1:
            for db in (self.nb, self.sb):
                self._wait_leader(db)
                self._wait_joined(db)
        self._ctl("ovn-nbctl", "--no-leader-only", "init")
        self._ctl("ovn-sbctl", "--no-leader-only", "init")
        self.northd = Daemon(
            "ovn-northd",
            [self.install.bin("ovn-northd"), f"--ovnnb-db={self._local_remote(self.nb)}",
             f"--ovnsb-db={self._local_remote(self.sb)}",
             f"--pidfile={self.workdir / 'run' / 'ovn-northd.pid'}",
             f"--unixctl={self.workdir / 'run' / 'ovn-northd.ctl'}",
             f"--log-file={self.workdir / 'log' / 'ovn-northd.log'}"],
            log_path=self.workdir / "log" / "ovn-northd.out", env=self.env,
        ).start()
        return self

    def _wait_member(self, db: OvnDb, member: DbMember) -> None:
        sock, port = member.sock, member.client_port
        wait_for(f"{db.kind} member {member.index} socket", lambda: unix_socket_ready(sock),
                 timeout=15, daemons=[member.daemon])
        if port:
            wait_for(f"{db.kind} member {member.index} port", lambda: tcp_ready(self.listen_address, port),
                     timeout=15, daemons=[member.daemon])

    def _wait_leader(self, db: OvnDb) -> None:
        wait_for(f"{db.kind} RAFT leader", lambda: self.leader_index(db) is not None, timeout=20)

    def _wait_joined(self, db: OvnDb) -> None:
        """Wait until every member has joined: a leader exists as soon as two members agree, and a member
        still "joining cluster" does not vote, so killing the leader then would leave no quorum."""
        def joined() -> bool:
            return all("Status: cluster member" in self._cluster_status(db, member) for member in db.members)

        wait_for(f"{db.kind} members joined the RAFT cluster", joined, timeout=30)

    def _cluster_status(self, db: OvnDb, member: DbMember) -> str:
        res = run([self.install.bin("ovs-appctl"), "-t", str(member.ctl), "cluster/status", db.db_name],
                  env=self.env, check=False, timeout=5)
        return res.stdout if res.returncode == 0 else ""

    def stop(self) -> None:
        if self.northd:
            self.northd.stop()
        for db in (self.nb, self.sb):
            for member in db.members:
                member.daemon.stop()

    def __enter__(self) -> OvnCentral:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- addresses ---------------------------------------------------------

    @property
    def nb_address(self) -> str:
        return self.nb.address

    @property
    def sb_address(self) -> str:
        return self.sb.address

    @property
    def nb_unix(self) -> str:
        return self.nb.unix_address

    @property
    def sb_unix(self) -> str:
        return self.sb.unix_address

    def _local_remote(self, db: OvnDb) -> str:
        if self.cluster > 1:
            return ",".join(f"unix:{m.sock}" for m in db.members)
        return db.unix_address

    # -- tools -------------------------------------------------------------

    def nbctl(self, *args: str) -> str:
        return self._ctl("ovn-nbctl", *args)

    def sbctl(self, *args: str) -> str:
        return self._ctl("ovn-sbctl", *args)

    def _ctl(self, tool: str, *args: str) -> str:
        db = self.nb if tool == "ovn-nbctl" else self.sb
        remote = self._local_remote(db)
        res = run([self.install.bin(tool), f"--db={remote}", "--timeout=20", *args], env=self.env)
        return res.stdout

    def trace(self, datapath: str, microflow: str, *extra: str) -> str:
        """``ovn-trace`` against this SB (``--ct new`` etc. in ``extra``)."""
        res = run([self.install.bin("ovn-trace"), f"--db={self._local_remote(self.sb)}",
                   *extra, datapath, microflow], env=self.env)
        return res.stdout

    def wait_northd(self) -> None:
        """Wait until northd has processed everything committed to NB so far."""
        self.nbctl("--wait=sb", "sync")

    # -- RAFT --------------------------------------------------------------

    def leader_index(self, db: OvnDb) -> int | None:
        for member in db.members:
            if member.daemon.alive() and "Role: leader" in self._cluster_status(db, member):
                return member.index
        return None

    def kill_leader(self, db: OvnDb) -> int:
        """SIGKILL the current RAFT leader of ``db``; returns its index."""
        index = self.leader_index(db)
        if index is None:
            raise RuntimeError(f"{db.kind} has no leader")
        db.members[index].daemon.kill()
        return index

    def restart_member(self, db: OvnDb, index: int) -> None:
        member = db.members[index]
        member.daemon.start()
        wait_for(f"{db.kind} member {index}", lambda: unix_socket_ready(member.sock), timeout=15,
                 daemons=[member.daemon])

    # -- creation ----------------------------------------------------------

    def _create(self, db: OvnDb) -> None:
        schema = self.install.schema("ovn-nb" if db.kind == "nb" else "ovn-sb")
        tool = self.install.bin("ovsdb-tool")
        raft_ports = [free_port() for _ in range(self.cluster)] if self.cluster > 1 else [None]
        for index in range(self.cluster):
            db_file = self.workdir / "db" / f"ovn{db.kind}_db{index}.db"
            db_file.unlink(missing_ok=True)
            raft_port = raft_ports[index]
            if self.cluster == 1:
                run([tool, "create", str(db_file), schema], env=self.env)
            elif index == 0:
                run([tool, "create-cluster", str(db_file), schema, f"tcp:127.0.0.1:{raft_port}"], env=self.env)
            else:
                run([tool, "join-cluster", str(db_file), db.db_name, f"tcp:127.0.0.1:{raft_port}",
                     f"tcp:127.0.0.1:{raft_ports[0]}"], env=self.env)
            sock = self.workdir / "run" / f"ovn{db.kind}_db{index}.sock"
            ctl = self.workdir / "run" / f"ovn{db.kind}_db{index}.ctl"
            client_port = free_port(self.listen_address) if self.tcp else None
            argv = [
                self.install.bin("ovsdb-server"), str(db_file),
                f"--remote=punix:{sock}",
                f"--remote=db:{db.db_name},{'NB_Global' if db.kind == 'nb' else 'SB_Global'},connections",
                f"--pidfile={self.workdir / 'run' / f'ovn{db.kind}_db{index}.pid'}",
                f"--unixctl={ctl}",
                f"--log-file={self.workdir / 'log' / f'ovsdb-server-{db.kind}{index}.log'}",
            ]
            if client_port:
                if self.ssl:
                    argv += [f"--remote=pssl:{client_port}:{self.listen_address}",
                             f"--private-key={self.ssl.server_key}", f"--certificate={self.ssl.server_cert}",
                             f"--ca-cert={self.ssl.ca_cert}"]
                else:
                    argv.append(f"--remote=ptcp:{client_port}:{self.listen_address}")
            daemon = Daemon(f"ovsdb-server-{db.kind}{index}", argv,
                            log_path=self.workdir / "log" / f"ovsdb-server-{db.kind}{index}.out", env=self.env)
            db.members.append(DbMember(db_name=db.db_name, index=index, db_file=db_file, sock=sock, ctl=ctl,
                                       client_port=client_port, raft_port=raft_port, daemon=daemon))
