"""The sandbox images: the echo server/client protocol (on loopback), its multicast modes (between two
network namespaces) and the OCI bundle layout."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import images
from ovnk_lab.procs import free_port


@pytest.fixture(scope="module")
def echo_binary() -> Path:
    return images.build_echo_binary()


@pytest.fixture
def echo_server(echo_binary: Path) -> Iterator[tuple[int, int]]:
    tcp_port, udp_port = free_port(), free_port()
    proc = subprocess.Popen([str(echo_binary), f"{tcp_port}/tcp", f"{udp_port}/udp"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    assert lines[:2] == [f"ovnk-echo: listening on {tcp_port}/tcp\n", f"ovnk-echo: listening on {udp_port}/udp\n"]
    yield tcp_port, udp_port
    proc.terminate()  # SIGTERM must end it at once (it often runs as PID 1)
    assert proc.wait(timeout=5) == 0


def tcp_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_lines_commands_and_http(echo_server: tuple[int, int]) -> None:
    tcp_port, _ = echo_server
    host = socket.gethostname().encode()
    assert tcp_exchange(tcp_port, b"one\r\nhostname\r\nclientip\nlast") == b"one\r\n" + host + b"\n127.0.0.1\nlast"
    big = b"x" * 10000 + b"\n"
    assert tcp_exchange(tcp_port, big) == big
    reply = tcp_exchange(tcp_port, b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n") and reply.endswith(b"\r\n\r\n" + host + b"\n")
    assert tcp_exchange(tcp_port, b"GET /clientip HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\n127.0.0.1\n")


def test_udp_datagrams(echo_server: tuple[int, int]) -> None:
    _, udp_port = echo_server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for payload, expected in ((b"hello", b"hello"), (b"hostname\n", socket.gethostname().encode() + b"\n"),
                                  (b"clientip", b"127.0.0.1\n")):
            sock.sendto(payload, ("127.0.0.1", udp_port))
            assert sock.recv(65536) == expected


def test_client_mode(echo_binary: Path, echo_server: tuple[int, int]) -> None:
    tcp_port, udp_port = echo_server
    for proto, port in (("tcp", tcp_port), ("udp", udp_port)):
        argv = images.echo_probe_command(proto, "127.0.0.1", port, "hostname")
        out = subprocess.run([str(echo_binary), *argv[1:]], check=False, capture_output=True, text=True, timeout=10)
        assert (out.returncode, out.stdout) == (0, socket.gethostname() + "\n")
    dead_port = free_port()
    started = time.monotonic()
    out = subprocess.run([str(echo_binary), "send", "udp", "127.0.0.1", str(dead_port), "x", "0.5"],
                         check=False, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and time.monotonic() - started < 5
    bad = subprocess.run([str(echo_binary), "70000/tcp"], check=False, capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "bad listener" in bad.stderr


def test_bundle_is_a_valid_oci_layout_naming_every_image() -> None:
    bundle = images.ensure_bundle()
    assert images.ensure_bundle() == bundle  # cached by content
    with tarfile.open(bundle) as tar:
        members = {m.name: m for m in tar.getmembers()}
        read = lambda name: tar.extractfile(members[name]).read()  # type: ignore[union-attr]  # noqa: E731
        assert json.loads(read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.loads(read("index.json"))
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        assert names == [images.PAUSE_IMAGE, images.BUSYBOX_IMAGE, images.ECHO_IMAGE]
        for name in members:
            if name.startswith("blobs/sha256/") and members[name].isfile():
                assert hashlib.sha256(read(name)).hexdigest() == name.rsplit("/", 1)[1]
        echo = index["manifests"][2]
        manifest = json.loads(read(f"blobs/sha256/{echo['digest'].split(':')[1]}"))
        config = json.loads(read(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
        assert config["config"]["Entrypoint"] == [images.ECHO_IN_IMAGE]
        assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]


# -- multicast modes, between two network namespaces joined by a veth pair ----------------


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Namespaces ``(sender, receiver)``: 192.0.2.1 and .2 on a veth pair, default routes over it
    (multicast follows them), no IPv6 duplicate address detection to wait for."""
    tag = uuid.uuid4().hex[:6]
    sender, receiver = f"mcs-{tag}", f"mcr-{tag}"
    for ns in (sender, receiver):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"], check=True)
    try:
        subprocess.run(["ip", "link", "add", "snd0", "netns", sender, "type", "veth", "peer", "name", "rcv0", "netns",
                        receiver], check=True)
        for ns, dev, ip in ((sender, "snd0", "192.0.2.1/24"), (receiver, "rcv0", "192.0.2.2/24")):
            for cmd in (["link", "set", dev, "up"], ["addr", "add", ip, "dev", dev], ["route", "add", "default", "dev", dev]):
                subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield sender, receiver
    finally:
        for ns in (sender, receiver):
            subprocess.run(["ip", "netns", "del", ns], check=False)


class Receiver:
    """An ovnk-echo multicast receiver in a namespace; a thread collects its output lines."""

    def __init__(self, binary: Path, ns: str, *args: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, str(binary), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.first = self.proc.stdout.readline().strip()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count: int, *, timeout: float = 20) -> list[str]:
        """The lines printed once there are ``count`` of them (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            assert time.monotonic() < deadline, f"{count} lines expected, got {self.lines}"
            time.sleep(0.05)
        return list(self.lines)

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return list(self.lines)


def send(binary: Path, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, str(binary), "mcast-send", *args], capture_output=True,
                          text=True, timeout=30, check=False)


def test_multicast_join_watch_and_send(echo_binary: Path, two_hosts: tuple[str, str]) -> None:
    sender, receiver = two_hosts
    joined = Receiver(echo_binary, receiver, "mcast-join", "239.1.2.3", "5000")
    watching = Receiver(echo_binary, receiver, "mcast-watch", "239.1.2.4", "5000")
    joined6 = Receiver(echo_binary, receiver, "mcast-join", "ff3e::4321:1234", "5000")
    try:
        assert (joined.first, watching.first, joined6.first) == (
            "ovnk-echo: joined 239.1.2.3 port 5000", "ovnk-echo: watching 239.1.2.4 port 5000",
            "ovnk-echo: joined ff3e::4321:1234 port 5000")
        # A datagram to another port of the joined group goes first: nothing may print it.
        assert send(echo_binary, sender, "239.1.2.3", "5001", "other port").returncode == 0
        assert send(echo_binary, sender, "239.1.2.3", "5000", "hello\n", "3", "0.05").returncode == 0
        # Not joined: the kernel gives a UDP socket nothing, the packet socket sees what arrived.
        assert send(echo_binary, sender, "239.1.2.4", "5000", "watched", "2", "0.05", "1").returncode == 0
        assert send(echo_binary, sender, "ff3e::4321:1234", "5000", "six").returncode == 0
        got, seen, got6 = joined.wait_for(3), watching.wait_for(2), joined6.wait_for(1)
    finally:
        joined.stop(), watching.stop(), joined6.stop()
    assert got == ["192.0.2.1 hello"] * 3
    assert seen == ["192.0.2.1 watched"] * 2
    assert len(got6) == 1 and got6[0].startswith("fe80::") and got6[0].endswith(" six"), got6


def test_multicast_rejoin_repeats_the_membership_report(echo_binary: Path, two_hosts: tuple[str, str]) -> None:
    sender, receiver = two_hosts
    # IGMPv3 reports go to 224.0.0.22 (IP protocol 2); count them on the sender's side of the link.
    dump = subprocess.Popen(["ip", "netns", "exec", sender, "tcpdump", "-i", "snd0", "-n", "-l", "igmp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert dump.stderr is not None and dump.stdout is not None
    try:
        while "listening on" not in dump.stderr.readline():  # attached to the interface
            assert dump.poll() is None, "tcpdump ended"
        reports: list[str] = []
        reader = threading.Thread(target=lambda: reports.extend(line for line in dump.stdout or () if "igmp v3 report"
                                                                in line), daemon=True)
        reader.start()
        rejoining = Receiver(echo_binary, receiver, "mcast-join", "239.1.2.5", "5000", "0.3")
        try:
            # A join alone sends two reports (robustness 2); rejoining every 0.3 s keeps sending more.
            deadline = time.monotonic() + 20
            while len(reports) < 6:
                assert time.monotonic() < deadline, reports
                time.sleep(0.1)
            assert send(echo_binary, sender, "239.1.2.5", "5000", "still there").returncode == 0
            assert rejoining.wait_for(1) == ["192.0.2.1 still there"]
        finally:
            rejoining.stop()
    finally:
        dump.terminate()
        dump.wait(timeout=10)


def test_multicast_bad_arguments(echo_binary: Path) -> None:
    for args, message in ((["mcast-send", "10.0.0.1", "5000", "x"], "not an IPv4 multicast address"),
                          (["mcast-join", "ff3e::1", "0"], "bad port 0"),
                          (["mcast-watch", "host", "5000"], "not a numeric IPv4/IPv6 address"),
                          (["mcast-send", "239.1.1.1", "5000", "x", "1", "0", "0"], "TTL 1-255"),
                          (["mcast-join", "239.1.1.1"], "usage: ovnk-echo mcast-join")):
        res = subprocess.run([str(echo_binary), *args], capture_output=True, text=True, timeout=10, check=False)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
