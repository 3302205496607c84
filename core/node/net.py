"""The netlink facade: links, addresses, routes, veth pairs, sysctls and TX checksum offload.

One :class:`NetFacade` works in one network namespace: the agent's own
(``NetFacade()``) or another one (``NetFacade(netns="/var/run/netns/x")``).
Every call runs on the facade's own worker thread, which holds the pyroute2
``IPRoute`` (pyroute2 0.9 sockets are bound to the thread that set them up)
and, for another namespace, has ``setns()``-ed itself into it at start. So the
netlink socket, the ethtool ioctl socket and ``/proc/sys/net`` all see that
namespace, no process is forked (pyroute2's own ``netns=`` forks a child per
socket) and the caller's thread never changes namespace.

The hot path of CNI ADD avoids even that for the pod side: see
:mod:`ovnk.core.node.netbatch` (one netlink batch from the calling thread).

Policy routing by owner (:meth:`NetFacade.set_rules`, :meth:`NetFacade.set_routes`)
converges an owner's ip rules and routes in other tables and records them in
the ownership ledger; see :mod:`ovnk.core.node.routing`.

TX checksum offload is switched with the ``SIOCETHTOOL`` ioctl
(``ETHTOOL_STXCSUM``) from Python: ~0.1 ms per change through the facade (a
few microseconds for the ioctl itself), against ~3.5 ms for forking
``ethtool -K <dev> tx off`` (measured on the lab machine, see
``tests/functional/node/test_net.py``). The userspace datapath drops TCP/UDP
whose checksum the kernel left to an offload that never happens (lab.md).

Never read ``/sys/class/net`` here: an agent started with ``nsenter --net``
sees the host's sysfs. Netlink and ``/proc/sys/net`` follow the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ovnk.core.errors import OvnkError
from ovnk.core.node import routing
from ovnk.core.node.owners import IP_ROUTES
from ovnk.core.node.owners import IP_RULES
from ovnk.core.node.owners import Ledger
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.routing import IpRule
from ovnk.core.node.routing import TableRoute

logger = logging.getLogger(__name__)

T = TypeVar("T")
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x00000016
ETHTOOL_STXCSUM = 0x00000017
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
NETLINK_BUFFER = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


class NetError(OvnkError):
    """A netlink or ioctl operation failed; the message names the operation and the object."""

    def __init__(self, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    kind: str
    master: int | None = None
    peer_index: int | None = None


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gateway: IPAddress | None
    dev: str | None
    proto: int
    scope: int
    priority: int | None
    src: IPAddress | None
    mtu: int | None = None

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0


def setns(fd: int) -> None:
    """Move the calling thread (only it: setns is per thread) into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NETLINK_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NETLINK_BUFFER)
    return sock


def ethtool_ioctl(sock: socket.socket, name: str, cmd: int, value: int = 0) -> int:
    """One ``SIOCETHTOOL`` ``ethtool_value`` command on ``name`` (in the namespace ``sock`` lives in)."""
    data = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    # struct ifreq: char ifr_name[16]; union { void *ifr_data; ... } (padded to 40 bytes)
    ifreq = bytearray(struct.pack("16sP", name.encode(), ctypes.addressof(data)).ljust(40, b"\0"))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise NetError(f"ethtool on {name}: {exc.strerror}", code=exc.errno or 0) from None
    return int(struct.unpack("II", data.raw[:8])[1])


class NetFacade:
    """Netlink access to one network namespace (see the module docstring).

    :param netns: path of the namespace (``/var/run/netns/<name>``,
        ``/proc/<pid>/ns/net``); ``None`` for the agent's own.
    :param ledger: where owners' rules and routes are recorded (the agent's
        Open_vSwitch ledger; default: in memory, for this facade's lifetime).
    :raises NetError: the namespace does not exist or cannot be entered.
    """

    def __init__(self, netns: str | None = None, *, ledger: Ledger | None = None) -> None:
        self.netns = netns
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self._routing_lock = threading.Lock()
        self._ns_fd: int | None = None
        if netns is not None:
            try:
                self._ns_fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise NetError(f"network namespace {netns}: {exc.strerror}", code=exc.errno or 0) from None
        self._ipr: IPRoute | None = None
        self._ioctl_sock: socket.socket | None = None
        self._closed = False
        self._lock = threading.Lock()
        label = os.path.basename(netns) if netns else "node"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"netlink-{label}")
        try:
            self._executor.submit(self._enter).result()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> NetFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._ipr is not None or self._ioctl_sock is not None:
            try:
                self._executor.submit(self._leave).result(timeout=10)
            except Exception:
                logger.debug("closing netlink facade for %s failed", self.netns or "node", exc_info=True)
        self._executor.shutdown(wait=True)
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None

    # -- worker thread -----------------------------------------------------------

    def _enter(self) -> None:
        if self._ns_fd is not None:
            try:
                setns(self._ns_fd)
            except OSError as exc:
                raise NetError(f"cannot enter network namespace {self.netns}: {exc.strerror}") from None
        # Created in this (worker) thread, hence in the namespace it is in now.
        self._ipr = IPRoute(use_socket=_netlink_socket())
        self._ioctl_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _leave(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._ioctl_sock is not None:
            self._ioctl_sock.close()
            self._ioctl_sock = None

    def _run(self, what: str, fn: Callable[[IPRoute], T]) -> T:
        if self._closed:
            raise NetError(f"{what}: the netlink facade for {self.netns or 'the node'} is closed")

        def call() -> T:
            assert self._ipr is not None
            try:
                return fn(self._ipr)
            except NetlinkError as exc:
                raise NetError(f"{what}: {os.strerror(exc.code) if exc.code else exc}", code=exc.code) from None

        future: Future[T] = self._executor.submit(call)
        return future.result()

    # -- links -------------------------------------------------------------------

    @staticmethod
    def _link(msg: Any) -> Link:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return Link(
            index=int(msg["index"]),
            name=str(msg.get_attr("IFLA_IFNAME")),
            mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
            mtu=int(msg.get_attr("IFLA_MTU") or 0),
            up=bool(msg["flags"] & IFF_UP),
            kind=str(kind or ""),
            master=msg.get_attr("IFLA_MASTER"),
            peer_index=msg.get_attr("IFLA_LINK"),
        )

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or ``None``."""

        def get(ipr: IPRoute) -> Link | None:
            try:
                msgs = list(ipr.link("get", ifname=name))
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
            return self._link(msgs[0]) if msgs else None

        return self._run(f"get link {name}", get)

    def links(self) -> list[Link]:
        return self._run("list links", lambda ipr: [self._link(m) for m in ipr.get_links()])

    def require_link(self, name: str) -> Link:
        link = self.link(name)
        if link is None:
            raise NetError(f"interface {name} does not exist in {self.netns or 'the node namespace'}",
                           code=errno.ENODEV)
        return link

    def set_link(self, name: str, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None) -> None:
        """Change only what differs from the current state (nothing at all when it matches)."""
        link = self.require_link(name)
        changes: dict[str, Any] = {}
        if mtu is not None and link.mtu != mtu:
            changes["mtu"] = mtu
        if mac is not None and link.mac.lower() != mac.lower():
            changes["address"] = mac.lower()
        if up is not None and link.up != up:
            changes["state"] = "up" if up else "down"
        if changes:
            self._run(f"set link {name} {changes}", lambda ipr: ipr.link("set", index=link.index, **changes))

    def delete_link(self, name: str) -> bool:
        """Delete ``name`` (a veth takes its peer along); ``False`` when it did not exist."""

        def delete(ipr: IPRoute) -> bool:
            try:
                ipr.link("del", ifname=name)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise
            return True

        return self._run(f"delete link {name}", delete)

    def create_veth(self, name: str, *, peer: str, peer_netns: str, mtu: int, mac: str | None = None,
                    peer_mac: str | None = None, up: bool = True) -> None:
        """A veth pair ``name`` (here, brought up when ``up``) / ``peer`` created directly inside
        ``peer_netns`` (lab.md: ~0.5 ms, against ~16 ms to move an existing link between namespaces),
        in one netlink request. Raises :class:`NetError` with ``code`` EEXIST when a name is taken."""
        try:
            fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetError(f"network namespace {peer_netns}: {exc.strerror}", code=exc.errno or 0) from None
        try:
            peer_spec: dict[str, Any] = {"ifname": peer, "net_ns_fd": fd, "mtu": mtu}
            if peer_mac:
                peer_spec["address"] = peer_mac.lower()
            spec: dict[str, Any] = {"ifname": name, "kind": "veth", "mtu": mtu, "peer": peer_spec}
            if mac:
                spec["address"] = mac.lower()
            if up:
                spec["state"] = "up"
            self._run(f"create veth {name}/{peer} in {peer_netns}", lambda ipr: ipr.link("add", **spec))
        finally:
            os.close(fd)

    def rename_link(self, name: str, new_name: str) -> None:
        """Rename ``name`` to ``new_name`` in this namespace (the kernel wants it down: it is left down).
        Raises :class:`NetError` (``code`` ENODEV: no such link; EEXIST: the name is taken)."""

        def rename(ipr: IPRoute) -> None:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise NetError(f"interface {name} does not exist in {self.netns or 'the node namespace'}",
                               code=errno.ENODEV)
            ipr.link("set", index=found[0], state="down")
            ipr.link("set", index=found[0], ifname=new_name)

        self._run(f"rename link {name} to {new_name}", rename)

    def move_link(self, name: str, *, netns: str | None, new_name: str | None = None) -> None:
        """Move ``name`` into the namespace at path ``netns`` (``None``: the agent's own, as a process),
        renamed to ``new_name`` in the same netlink request; the kernel leaves it down there.

        For devices that must keep their identity (an SR-IOV VF wired into a pod, and back on DEL);
        a pod's veth is created in place instead (``create_veth``, much cheaper). Raises
        :class:`NetError` (``code`` ENODEV: no such link; EEXIST: the name is taken over there).
        """
        target = netns or "/proc/self/ns/net"
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetError(f"network namespace {target}: {exc.strerror}", code=exc.errno or 0) from None
        spec: dict[str, Any] = {"net_ns_fd": fd}
        if new_name and new_name != name:
            spec["ifname"] = new_name

        def move(ipr: IPRoute) -> None:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise NetError(f"interface {name} does not exist in {self.netns or 'the node namespace'}",
                               code=errno.ENODEV)
            ipr.link("set", index=found[0], **spec)

        try:
            self._run(f"move link {name} to {target} as {new_name or name}", move)
        finally:
            os.close(fd)

    def setup_interface(self, name: str, *, addresses: Iterable[IPInterface] = (),
                        routes: Iterable[tuple[IPNetwork, IPAddress | None]] = (), up: bool = True,
                        tx_checksum: bool | None = None) -> None:
        """Configure ``name`` in one pass on the worker thread: TX checksum offload, link state,
        addresses (present ones are fine) and routes ``(dst, gateway)`` (replaced: idempotent).

        One hop to the worker instead of one per step: this is the pod side of every ADD.
        """
        wanted_addresses = list(addresses)
        wanted_routes = list(routes)

        def setup(ipr: IPRoute) -> None:
            msgs = list(ipr.link("get", ifname=name))
            index = msgs[0]["index"]
            if tx_checksum is not None:
                self._ethtool_now(name, ETHTOOL_STXCSUM, 1 if tx_checksum else 0)
            if up and not msgs[0]["flags"] & IFF_UP:
                ipr.link("set", index=index, state="up")
            for address in wanted_addresses:
                try:
                    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            for dst, gateway in wanted_routes:
                spec: dict[str, Any] = {"dst": str(dst), "oif": index}
                if gateway is not None:
                    spec["gateway"] = str(gateway)
                else:
                    spec["scope"] = RT_SCOPE_LINK
                family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
                ipr.route("replace", family=family, **spec)

        self._run(f"set up interface {name}", setup)

    # -- addresses ----------------------------------------------------------------

    def addresses(self, name: str, *, include_link_local: bool = False) -> list[IPInterface]:
        """Addresses of ``name`` (global ones unless ``include_link_local``)."""
        link = self.link(name)
        if link is None:
            return []

        def get(ipr: IPRoute) -> list[IPInterface]:
            found: list[IPInterface] = []
            for msg in ipr.get_addr(index=link.index):
                addr = msg.get_attr("IFA_ADDRESS")
                if addr is None:
                    continue
                iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
                if iface.ip.is_link_local and not include_link_local:
                    continue
                found.append(iface)
            return found

        return self._run(f"list addresses of {name}", get)

    def all_addresses(self) -> dict[str, list[IPInterface]]:
        """Global addresses of every link, by link name."""
        names = {link.index: link.name for link in self.links()}

        def get(ipr: IPRoute) -> dict[str, list[IPInterface]]:
            found: dict[str, list[IPInterface]] = {}
            for msg in ipr.get_addr():
                addr = msg.get_attr("IFA_ADDRESS")
                if addr is None or msg["index"] not in names:
                    continue
                iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
                if not iface.ip.is_link_local:
                    found.setdefault(names[msg["index"]], []).append(iface)
            return found

        return self._run("list addresses", get)

    def add_address(self, name: str, address: IPInterface) -> bool:
        """Add ``address`` to ``name``; ``False`` when it was there already."""
        link = self.require_link(name)

        def add(ipr: IPRoute) -> bool:
            try:
                ipr.addr("add", index=link.index, address=str(address.ip), prefixlen=address.network.prefixlen)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    return False
                raise
            return True

        return self._run(f"add address {address} to {name}", add)

    def delete_address(self, name: str, address: IPInterface) -> bool:
        link = self.link(name)
        if link is None:
            return False

        def delete(ipr: IPRoute) -> bool:
            try:
                ipr.addr("del", index=link.index, address=str(address.ip), prefixlen=address.network.prefixlen)
            except NetlinkError as exc:
                if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    return False
                raise
            return True

        return self._run(f"delete address {address} from {name}", delete)

    # -- routes -------------------------------------------------------------------

    def routes(self, *, family: int = socket.AF_INET, dev: str | None = None) -> list[Route]:
        """Routes of the main table (optionally only those through ``dev``)."""
        names = {link.index: link.name for link in self.links()}
        only = None
        if dev is not None:
            only = next((index for index, name in names.items() if name == dev), None)
            if only is None:
                return []

        def get(ipr: IPRoute) -> list[Route]:
            found = []
            for msg in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                if msg["type"] != 1:  # RTN_UNICAST only
                    continue
                oif = msg.get_attr("RTA_OIF")
                if only is not None and oif != only:
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                gateway = msg.get_attr("RTA_GATEWAY")
                src = msg.get_attr("RTA_PREFSRC")
                metrics = msg.get_attr("RTA_METRICS")
                mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
                found.append(Route(
                    dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
                    gateway=ipaddress.ip_address(gateway) if gateway else None,
                    dev=names.get(oif) if oif is not None else None,
                    proto=int(msg["proto"]), scope=int(msg["scope"]),
                    priority=msg.get_attr("RTA_PRIORITY"),
                    src=ipaddress.ip_address(src) if src else None,
                    mtu=mtu,
                ))
            return found

        return self._run("list routes", get)

    def default_route(self) -> Route | None:
        """The IPv4 default route with the lowest metric."""
        defaults = [r for r in self.routes() if r.is_default]
        defaults.sort(key=lambda r: r.priority or 0)
        return defaults[0] if defaults else None

    def replace_route(self, dst: IPNetwork, *, dev: str, gateway: IPAddress | None = None,
                      src: IPAddress | None = None, mtu: int | None = None, priority: int | None = None) -> None:
        """Create or replace the route to ``dst`` (``ip route replace``)."""
        link = self.require_link(dev)
        spec: dict[str, Any] = {"dst": str(dst), "oif": link.index}
        if gateway is not None:
            spec["gateway"] = str(gateway)
        else:
            spec["scope"] = RT_SCOPE_LINK
        if src is not None:
            spec["prefsrc"] = str(src)
        if priority is not None:
            spec["priority"] = priority
        if mtu:
            spec["metrics"] = {"attrs": [("RTAX_MTU", mtu)]}
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        self._run(f"replace route {dst} via {gateway or '-'} dev {dev}",
                  lambda ipr: ipr.route("replace", family=family, **spec))

    def ensure_route(self, dst: IPNetwork, *, dev: str, gateway: IPAddress | None = None,
                     mtu: int | None = None) -> bool:
        """Like :meth:`replace_route`, but writes nothing when an identical route exists; ``True`` if written."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        for route in self.routes(family=family, dev=dev):
            if route.dst == dst and route.gateway == gateway and (mtu is None or route.mtu == mtu):
                return False
        self.replace_route(dst, dev=dev, gateway=gateway, mtu=mtu)
        return True

    def delete_route(self, dst: IPNetwork, *, dev: str | None = None, gateway: IPAddress | None = None) -> bool:
        spec: dict[str, Any] = {"dst": str(dst)}
        if dev is not None:
            link = self.link(dev)
            if link is None:
                return False
            spec["oif"] = link.index
        if gateway is not None:
            spec["gateway"] = str(gateway)
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6

        def delete(ipr: IPRoute) -> bool:
            try:
                ipr.route("del", family=family, **spec)
            except NetlinkError as exc:
                if exc.code in (errno.ESRCH, errno.ENOENT):
                    return False
                raise
            return True

        return self._run(f"delete route {dst}", delete)

    # -- policy routing by owner -----------------------------------------------------

    def set_rules(self, owner: str, rules: Iterable[IpRule]) -> bool:
        """Converge ``owner``'s ip rules to ``rules`` (both IP versions; see :mod:`~ovnk.core.node.routing`).

        Missing rules are added, rules the owner created before and does not give now are
        deleted, rules it did not create are never touched. ``False`` when nothing changed.

        :raises OwnershipError: ``owner`` is not core or an enabled plugin.
        :raises NetError: the kernel refused a rule.
        """
        self.ledger.owners.check(owner)
        return self._converge_rules(owner, list(rules))

    def set_routes(self, owner: str, routes: Iterable[TableRoute]) -> bool:
        """Converge ``owner``'s routes (in tables other than ``main``, typically) to ``routes``.

        A route is identified by (table, destination): the owner's are added or replaced,
        those it no longer gives are deleted; a destination held in that table by a route
        the owner did not create is an error, never overwritten. ``False`` when nothing changed.

        :raises OwnershipError: ``owner`` is not core or an enabled plugin.
        :raises NetError: a conflict, a missing interface, or the kernel refused a route.
        """
        self.ledger.owners.check(owner)
        return self._converge_routes(owner, list(routes))

    def rules_of(self, owner: str) -> list[IpRule]:
        """The rules ``owner`` created (from the ledger)."""
        return [IpRule.from_json(item) for item in self.ledger.owned(IP_RULES).get(owner, [])]

    def routes_of(self, owner: str) -> list[TableRoute]:
        """The routes ``owner`` created (from the ledger)."""
        return [TableRoute.from_json(item) for item in self.ledger.owned(IP_ROUTES).get(owner, [])]

    def release_routing(self, owner: str) -> bool:
        """Delete every rule and route ``owner`` created, without the owner check (start-up clean-up of
        owners that are no longer enabled); ``True`` when something was deleted."""
        rules = self._converge_rules(owner, [])
        return self._converge_routes(owner, []) or rules

    def _converge_rules(self, owner: str, wanted: list[IpRule]) -> bool:
        return self._converge(IP_RULES, owner, wanted=wanted, previous=self.rules_of(owner),
                              converge=routing.converge_rules)

    def _converge_routes(self, owner: str, wanted: list[TableRoute]) -> bool:
        return self._converge(IP_ROUTES, owner, wanted=wanted, previous=self.routes_of(owner),
                              converge=routing.converge_routes)

    def _converge(self, kind: str, owner: str, *, wanted: list[Any], previous: list[Any],
                  converge: Callable[..., list[Any]]) -> bool:
        """Run one of :mod:`~ovnk.core.node.routing`'s converge functions and record what the owner owns."""
        changes: list[str] = []
        added: list[Any] = []
        with self._routing_lock:
            try:
                owned = self._run(f"{kind} of {owner}", lambda ipr: converge(
                    ipr, wanted=wanted, previous=previous, log=changes.append, added=added))
            except routing.RouteConflict as exc:
                raise NetError(f"{kind} of {owner}: {exc}", code=errno.EEXIST) from None
            except BaseException:
                # Whatever was added before the failure is the owner's too: never lose track of it.
                self.ledger.record(kind, owner, routing.ledger_items([*previous, *added]))
                raise
            finally:
                for change in changes:
                    logger.info("%s: %s", owner, change)
            self.ledger.record(kind, owner, routing.ledger_items(owned))
        return bool(changes)

    # -- offload, sysctl -------------------------------------------------------------

    def _ethtool_now(self, name: str, cmd: int, value: int = 0) -> int:
        """The ``SIOCETHTOOL`` ioctl; on the worker thread only."""
        assert self._ioctl_sock is not None
        return ethtool_ioctl(self._ioctl_sock, name, cmd, value)

    def _ethtool(self, name: str, cmd: int, value: int = 0) -> int:
        return self._run(f"ethtool {name}", lambda _ipr: self._ethtool_now(name, cmd, value))

    def tx_checksum(self, name: str) -> bool:
        """Whether TX checksum offload is on for ``name``."""
        return bool(self._ethtool(name, ETHTOOL_GTXCSUM))

    def set_tx_checksum(self, name: str, enabled: bool) -> None:
        """Switch TX checksum offload (the kernel also drops the features that depend on it: TSO...)."""
        if self.tx_checksum(name) != enabled:
            self._ethtool(name, ETHTOOL_STXCSUM, 1 if enabled else 0)

    def sysctl(self, key: str, value: str | None = None) -> str:
        """Read (or write, when ``value`` is given) ``/proc/sys/<key>`` in this namespace; returns the old value."""
        path = "/proc/sys/" + key.replace(".", "/")

        def access(_ipr: IPRoute) -> str:
            try:
                with open(path) as handle:
                    old = handle.read().strip()
                if value is not None and old != value:
                    with open(path, "w") as handle:
                        handle.write(value)
            except OSError as exc:
                raise NetError(f"sysctl {key}: {exc.strerror}", code=exc.errno or 0) from None
            return old

        return self._run(f"sysctl {key}", access)

    def set_sysctls(self, values: Iterable[tuple[str, str]]) -> None:
        for key, value in values:
            self.sysctl(key, value)
