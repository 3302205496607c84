"""The sandbox API server's way into the cluster network: an HTTP CONNECT proxy on a Unix socket.

In a real cluster kube-apiserver runs on a control-plane node whose network is the cluster's: it
reaches the kubelets (exec, logs), pods (``pods/proxy``) and services (``services/proxy``)
directly. The sandbox's API server runs in the host namespace, which has no route to the pod
network (its default route leaves the machine, where nothing may go). kube-apiserver's egress
selector (``--egress-selector-config-file``, the ``cluster`` selection, the mechanism Konnectivity
uses) sends every connection of that kind through an HTTP CONNECT proxy instead: this one listens
on a Unix socket in the sandbox's directory and dials from the first node's network namespace,
where the underlay, the pod network and the service network are routed (the last two through
ovnk's management port), as they are on a control-plane node.

Run as ``python -m ovnk_lab.egress_proxy --socket PATH`` inside that namespace
(:func:`egress_selector_config` writes the API server's side).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import socketserver
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
CONNECT_TIMEOUT = 10.0


def egress_selector_config(path: Path, *, socket_path: Path) -> Path:
    """Write the API server's EgressSelectorConfiguration: ``cluster`` traffic via ``socket_path``."""
    config = {
        "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {
            "proxyProtocol": "HTTPConnect", "transport": {"uds": {"udsName": str(socket_path)}}}}],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def parse_connect(head: bytes) -> tuple[str, int]:
    """(host, port) of a ``CONNECT host:port HTTP/1.x`` request head; ValueError otherwise."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"not a CONNECT request: {line!r}")
    host, sep, port = parts[1].rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad CONNECT target: {parts[1]!r}")
    return host.strip("[]"), int(port)


def relay(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until both sides have closed; a side's EOF half-closes the other."""
    peer = {one: other, other: one}
    open_readers = [one, other]
    while open_readers:
        readable, _, _ = select.select(open_readers, [], [])
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                try:
                    peer[sock].sendall(data)
                    continue
                except OSError:
                    return
            open_readers.remove(sock)
            try:
                peer[sock].shutdown(socket.SHUT_WR)
            except OSError:
                pass


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > MAX_REQUEST_HEAD:
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        try:
            host, port = parse_connect(head)
        except ValueError as exc:
            logger.warning("%s", exc)
            client.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return
        try:
            upstream = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            logger.info("CONNECT %s:%d failed: %s", host, port, exc)
            client.sendall(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{exc}".encode())
            return
        with upstream:
            upstream.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            relay(client, upstream)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(socket_path: Path) -> None:
    """Serve until killed (SIGTERM ends the process; the socket file is removed first when possible)."""
    socket_path.unlink(missing_ok=True)
    with _Server(str(socket_path), _Handler) as server:
        os.chmod(socket_path, 0o600)
        logger.info("egress proxy on %s", socket_path)
        server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ovnk_lab.egress_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
