"""The ``[hwoffload]`` settings section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ovnk import setting

TcPolicy = Literal["none", "skip_sw", "skip_hw"]


def parse_node_selector(text: str) -> dict[str, str | None]:
    """``a=b,c`` -> {"a": "b", "c": None} (``None``: the label must exist, any value)."""
    wanted: dict[str, str | None] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        wanted[key.strip()] = value.strip() if sep else None
    return wanted


def selector_problem(text: str) -> str | None:
    for key, value in parse_node_selector(text).items():
        if not key or "=" in (value or "") or " " in key:
            return f"{text!r} is not a list of key=value or key items"
    return None


def selects(text: str, labels: dict[str, str]) -> bool:
    return all(key in labels and (value is None or labels[key] == value)
               for key, value in parse_node_selector(text).items())


@dataclass(frozen=True)
class HwOffloadSettings:
    """Where the NIC is described and how OVS offloads (upstream: ``other_config:hw-offload``,
    ``other_config:tc-policy``; the device IDs Multus passes)."""

    sysfs_root: str = setting(
        "/sys", help="root of the sysfs tree the VFs, PFs and representors are read from (the lab: its stand-in)")
    tc_policy: TcPolicy = setting(
        "none", help="Open_vSwitch other_config:tc-policy: none (hardware, else software), skip_sw, skip_hw")
    device_id_annotation: bool = setting(
        False, help="take the deviceID of a request without one from the pod annotation "
                    "k8s.ovn.org/hwoffload-device-id (for clusters without Multus and the SR-IOV device plugin)")
    mgmt_port_netdev: str = setting(
        "", help="a VF netdev to carry the management port (upstream: mgmt-port-netdev): renamed to the "
                 "management port's name, its representor plugged into br-int; empty: core's internal port")
    node_selector: str = setting(
        "", check=selector_problem,
        help="run only on nodes whose labels match (key=value or key, comma separated; empty: every node); "
             "elsewhere the plugin does nothing, so one cluster-wide configuration serves mixed nodes")
