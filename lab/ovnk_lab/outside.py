"""The outside world of egress tests: extra addresses on the sandbox's external host, and a DNS server.

The sandbox's external namespace (``<prefix>-ext``, see :mod:`ovnk_lab.hostnet`)
is the nodes' default gateway. :class:`OutsideHost` gives it addresses of an
"internet" network (``198.18.0.0/24``, RFC 2544's benchmark range: never a
real destination) on its loopback, which every node reaches through its default
route, and a :class:`Dnsmasq` answering from a hosts file that a test rewrites
(dnsmasq re-reads it on SIGHUP), so a name's answer can change under a running
cluster. Servers for these addresses: ``tests/e2e/conftest.py``'s
``external_echo`` (it listens on every address of the namespace).

:class:`Dnsmasq` also runs without a namespace, on loopback, for functional
tests and benchmarks of DNS clients.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run

if TYPE_CHECKING:
    from ovnk_lab.sandbox import Sandbox

#: Names in this domain are answered from the hosts file only; an unknown one is NXDOMAIN.
DOMAIN = "ovnk.test"
INTERNET = ipaddress.IPv4Network("198.18.0.0/24")


class Dnsmasq:
    """A dnsmasq serving ``hosts`` (name -> addresses) with a fixed TTL, on one address and port.

    :param workdir: its hosts file, pid file and log.
    :param address: the address it listens on (``127.0.0.1``, or the external host's).
    :param port: UDP/TCP port.
    :param netns: the network namespace to run in (None: the caller's).
    :param ttl: the TTL of every answer (dnsmasq's ``--local-ttl``; 0 is its default).
    :param domain: answered from the hosts file only (an unknown name there is NXDOMAIN).
    """

    def __init__(self, workdir: Path, *, address: str, port: int = 53, netns: str | None = None,
                 ttl: int = 0, domain: str = DOMAIN) -> None:
        self.workdir = workdir
        self.address = address
        self.port = port
        self.netns = netns
        self.ttl = ttl
        self.domain = domain
        self.hosts_file = workdir / "hosts"
        self.daemon: Daemon | None = None

    @property
    def server(self) -> str:
        """``address:port``, the form ``[egressfirewall] dns-servers`` takes."""
        return f"{self.address}:{self.port}"

    def _write(self, hosts: Mapping[str, Sequence[str]]) -> None:
        lines = [f"{ip} {name}" for name, ips in sorted(hosts.items()) for ip in ips]
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(self.hosts_file)

    def start(self, hosts: Mapping[str, Sequence[str]], *, timeout: float = 10.0) -> Dnsmasq:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write(hosts)
        argv = [paths.system_bin("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", f"--addn-hosts={self.hosts_file}", f"--listen-address={self.address}",
                "--bind-interfaces", f"--port={self.port}", f"--local-ttl={self.ttl}", f"--local=/{self.domain}/",
                "--user=root", f"--pid-file={self.workdir / 'dnsmasq.pid'}", "--log-queries",
                f"--log-facility={self.workdir / 'dnsmasq.log'}"]
        preexec = [paths.system_bin("nsenter"), f"--net={netns_path(self.netns)}"] if self.netns else []
        starts = self._log().count("started, version")  # the log survives a stop: wait for this start's line
        self.daemon = Daemon("dnsmasq", argv, log_path=self.workdir / "dnsmasq.out", preexec=preexec).start()
        deadline = time.monotonic() + timeout
        while self._log().count("started, version") <= starts:
            self.daemon.check_alive()
            if time.monotonic() > deadline:
                raise StartupError(f"dnsmasq did not start within {timeout:g}s: {self._log()[-500:]}")
            time.sleep(0.05)
        return self

    def _log(self) -> str:
        try:
            return (self.workdir / "dnsmasq.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def set_hosts(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """Change the answers: the hosts file is replaced and dnsmasq re-reads it (SIGHUP)."""
        assert self.daemon is not None and self.daemon.pid is not None, "dnsmasq is not running"
        self._write(hosts)
        os.kill(self.daemon.pid, signal.SIGHUP)

    def queries(self) -> int:
        """Queries dnsmasq has logged so far."""
        return sum(1 for line in self._log().splitlines() if ": query[" in line)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


class OutsideHost:
    """The sandbox's external namespace, grown for egress tests (nothing happens until asked)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.netns = sandbox.cluster.underlay.ext_netns
        self.dns: Dnsmasq | None = None

    @property
    def ip(self) -> str:
        """The external host's underlay address (the nodes' default gateway)."""
        return self.sandbox.cluster.underlay.ext_ip

    def _ip(self, *args: str) -> None:
        run([paths.system_bin("ip"), "-n", self.netns, *args])

    def internet_addresses(self, count: int) -> list[str]:
        """``count`` addresses of :data:`INTERNET` on the external host (added if missing)."""
        if not 0 < count < INTERNET.num_addresses - 1:
            raise ValueError(f"count must be 1..{INTERNET.num_addresses - 2}")
        addresses = [str(INTERNET.network_address + i) for i in range(1, count + 1)]
        for address in addresses:
            self._ip("addr", "replace", f"{address}/32", "dev", "lo")
        return addresses

    def remove_internet_addresses(self) -> None:
        self._ip("addr", "flush", "dev", "lo", "to", str(INTERNET))

    def start_dns(self, hosts: Mapping[str, Sequence[str]], *, ttl: int = 0) -> Dnsmasq:
        """A dnsmasq on the external host's address, port 53 (recorded: ``down`` stops it too)."""
        if self.dns is not None:
            raise StartupError("the outside host's DNS server runs already")
        workdir = self.sandbox.workdir / "outside-dns"
        self.sandbox.cluster.add_dir(workdir)
        self.dns = Dnsmasq(workdir, address=self.ip, netns=self.netns, ttl=ttl).start(hosts)
        assert self.dns.daemon is not None
        self.sandbox.cluster.record(self.dns.daemon)
        return self.dns

    def stop_dns(self) -> None:
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
