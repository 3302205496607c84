"""What the plugin reads from Kubernetes objects, and the addresses it derives (pure: no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann

#: A namespace whose pods may send and receive multicast (only the value ``"true"`` enables it,
#: as upstream; multicast cannot be enabled cluster-wide).
MULTICAST_ENABLED = "k8s.ovn.org/multicast-enabled"


def multicast_enabled(namespace: Mapping[str, Any]) -> bool:
    return ann.annotations_of(namespace).get(MULTICAST_ENABLED) == "true"


def annotation_problem(namespace: Mapping[str, Any]) -> str | None:
    """Why the namespace's annotation value is not understood, or None (absent, ``true`` or ``false``).

    Upstream treats every value but ``"true"`` as off without a word; a value
    like ``True`` or ``yes`` is most likely meant to enable it, so it is reported.
    """
    value = ann.annotations_of(namespace).get(MULTICAST_ENABLED)
    if value is None or value in ("true", "false"):
        return None
    return (f"annotation {MULTICAST_ENABLED}={value!r} is not \"true\" or \"false\"; "
            "multicast stays disabled in this namespace")


def annotation_value(namespace: Mapping[str, Any]) -> str | None:
    return ann.annotations_of(namespace).get(MULTICAST_ENABLED)


def ipv6_link_local(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address of a MAC (``fe80::`` + the MAC with ``ff:fe`` in the middle
    and the universal/local bit flipped): the source of the switch's MLD queries."""
    octets = [int(part, 16) for part in mac.split(":")]
    if len(octets) != 6 or any(not 0 <= o <= 255 for o in octets):
        raise ValueError(f"not a MAC address: {mac!r}")
    eui = [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui]))
