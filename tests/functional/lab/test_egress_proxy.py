"""The sandbox API server's egress proxy (HTTP CONNECT over a Unix socket), with real sockets."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import egress_proxy


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "egress.sock"
    server = egress_proxy._Server(str(path), egress_proxy._Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


@pytest.fixture
def upper_server() -> Iterator[int]:
    """A loopback TCP server that answers everything it reads, upper-cased, after the client half-closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                conn.sendall(data.upper())
    threading.Thread(target=serve, daemon=True).start()
    yield port
    listener.close()


def connect(proxy: Path, request: bytes) -> tuple[socket.socket, bytes]:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(proxy))
    client.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(1)
        if not chunk:
            break
        head += chunk
    return client, head


def test_connect_relays_both_ways_with_half_close(proxy: Path, upper_server: int) -> None:
    # The first payload bytes ride in the same packet as the request head.
    client, head = connect(proxy, f"CONNECT 127.0.0.1:{upper_server} HTTP/1.1\r\nHost: x\r\n\r\nhello ".encode())
    with client:
        assert head.startswith(b"HTTP/1.1 200"), head
        client.sendall(b"world")
        client.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    assert reply == b"HELLO WORLD"


def test_bad_requests_and_unreachable_targets_get_http_errors(proxy: Path) -> None:
    client, head = connect(proxy, b"GET / HTTP/1.1\r\n\r\n")
    client.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    client, head = connect(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    client.close()
    assert head.startswith(b"HTTP/1.1 502"), head


def test_parse_connect_targets() -> None:
    assert egress_proxy.parse_connect(b"CONNECT 10.244.1.5:8080 HTTP/1.1\r\nHost: a") == ("10.244.1.5", 8080)
    assert egress_proxy.parse_connect(b"CONNECT [fd00::5]:443 HTTP/1.1") == ("fd00::5", 443)
    for bad in (b"CONNECT 10.0.0.1 HTTP/1.1", b"CONNECT a:0 HTTP/1.1", b"POST a:80 HTTP/1.1", b"CONNECT a:80"):
        with pytest.raises(ValueError):
            egress_proxy.parse_connect(bad)


def test_the_api_servers_configuration_names_the_socket(tmp_path: Path) -> None:
    path = egress_proxy.egress_selector_config(tmp_path / "sel.json", socket_path=tmp_path / "egress.sock")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "EgressSelectorConfiguration"
    [selection] = doc["egressSelections"]
    assert selection["name"] == "cluster"
    assert selection["connection"] == {"proxyProtocol": "HTTPConnect",
                                       "transport": {"uds": {"udsName": str(tmp_path / "egress.sock")}}}
