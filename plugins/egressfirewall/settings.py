"""The ``[egressfirewall]`` settings section: how ``dnsName`` rules are resolved."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ovnk import setting


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def parse_server(text: str) -> tuple[str, int]:
    """``IP``, ``IP:port`` or ``[IPv6]:port`` -> (address, port); port 53 by default.

    :raises ValueError: naming the text.
    """
    raw = text.strip()
    port = 53
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        port = int(port_text)
    else:
        host = raw
    ipaddress.ip_address(host)  # raises ValueError for a name: the resolver's address must be an IP
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


def _servers(value: tuple[str, ...]) -> str | None:
    for item in value:
        try:
            parse_server(item)
        except ValueError:
            return f"{item!r} is not IP, IP:port or [IPv6]:port"
    return None


@dataclass(frozen=True)
class EgressFirewallSettings:
    """The DNS resolver of ``dnsName`` rules (upstream resolves them from the controller's
    ``/etc/resolv.conf``; here the servers can be named)."""

    dns_servers: tuple[str, ...] = setting(
        (), check=_servers,
        help="DNS servers asked for dnsName rules (IP, IP:port; comma separated); empty: /etc/resolv.conf")
    dns_timeout: float = setting(2.0, check=_positive, help="seconds one DNS query may take (all servers tried)")
    dns_min_interval: float = setting(
        5.0, check=_positive, help="seconds between two resolutions of a name whose answer has no TTL (TTL 0)")
    dns_max_backoff: float = setting(
        120.0, check=_positive, help="longest wait before asking again for a name that failed to resolve")
    dns_queries_per_second: float = setting(
        50.0, check=_positive, help="at most this many DNS queries per second, all names together")
    dns_workers: int = setting(4, check=_positive, help="names resolved at the same time")

    def validate(self) -> None:
        if self.dns_max_backoff < self.dns_min_interval:
            raise ValueError("dns-max-backoff must not be shorter than dns-min-interval")
