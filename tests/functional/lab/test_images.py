"""The sandbox images: the echo server/client protocol (on loopback) and the OCI bundle layout."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import tarfile
import time
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
