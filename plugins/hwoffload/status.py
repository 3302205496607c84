"""What the node agent reports about offload on this node: pure functions of what it read.

The report is the node annotation ``k8s.ovn.org/hw-offload`` (JSON), the log and the
metrics. "Active" means offload is in effect: ``other_config:hw-offload`` is ``true`` in
the local database *and* the bridges run the kernel datapath (``system``), whose TC flower
rules the NIC takes over. The userspace datapath (``netdev``) only offloads through DPDK's
rte_flow on DPDK ports, which this agent does not wire; there the VF path works but the
report says offload is not active, and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk.plugins.hwoffload.sysfs import PhysicalFunction

ANNOTATION = "k8s.ovn.org/hw-offload"
#: ovn-kubernetes' documented minimum for OVS hardware offload (TC flower, ct offload).
MIN_OVS_VERSION = (2, 13)


def offload_keys(tc_policy: str) -> dict[str, str | None]:
    """The ``Open_vSwitch other_config`` keys this plugin owns."""
    return {"hw-offload": "true", "tc-policy": tc_policy}


def parse_version(text: str) -> tuple[int, ...]:
    """``2.17.9`` -> (2, 17, 9); anything unparsable -> ()."""
    parts = []
    for item in text.split("."):
        digits = "".join(c for c in item if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def ovs_problem(version: str, datapath_types: Sequence[str]) -> str | None:
    """Why this ovs-vswitchd cannot offload, or ``None``.

    ``ovs_version`` is written by the service scripts (ovs-ctl), not by ovs-vswitchd: a
    daemon started by hand leaves it empty, and then only its reported datapaths (which
    ovs-vswitchd writes itself) show that it runs.
    """
    if not datapath_types:
        return "ovs-vswitchd has not reported its datapath types (Open_vSwitch datapath_types): is it running?"
    if not version:
        return None
    parsed = parse_version(version)
    if not parsed:
        return f"Open_vSwitch ovs_version {version!r} is not a version"
    if parsed[:2] < MIN_OVS_VERSION:
        wanted = ".".join(str(p) for p in MIN_OVS_VERSION)
        return f"Open vSwitch {version} is older than {wanted}, the first release whose offload ovn-kubernetes supports"
    return None


def pf_problem(pfs: Sequence[PhysicalFunction], sysfs_root: str) -> str | None:
    """Why no PF can serve VF pods, or ``None`` when at least one is a switchdev PF with VFs."""
    if not pfs:
        return f"no SR-IOV capable network device under {sysfs_root}/class/net (none has device/sriov_totalvfs)"
    switchdev = [pf for pf in pfs if pf.switchdev]
    if not switchdev:
        names = ", ".join(pf.name for pf in pfs)
        return (f"no PF is in switchdev mode ({names}: no phys_switch_id); set it with "
                f"'devlink dev eswitch set pci/<PF> mode switchdev'")
    if not any(pf.num_vfs for pf in switchdev):
        return f"the switchdev PFs ({', '.join(pf.name for pf in switchdev)}) have no VFs (sriov_numvfs is 0)"
    return None


@dataclass(frozen=True)
class OffloadStatus:
    enabled: bool
    active: bool
    tc_policy: str
    datapath: str
    pfs: tuple[str, ...]
    vfs_free: int
    vfs_in_use: int
    reason: str

    def annotation(self) -> str:
        return json.dumps({"enabled": self.enabled, "active": self.active, "tc-policy": self.tc_policy,
                           "datapath": self.datapath, "pfs": list(self.pfs),
                           "vfs": {"free": self.vfs_free, "in-use": self.vfs_in_use}, "reason": self.reason},
                          sort_keys=True)


def offload_status(*, other_config: Mapping[str, str], datapath: str, pfs: Sequence[PhysicalFunction],
                   vfs_free: int, vfs_in_use: int) -> OffloadStatus:
    enabled = other_config.get("hw-offload") == "true"
    if not enabled:
        reason = "Open_vSwitch other_config:hw-offload is not true"
    elif datapath != "system":
        reason = (f"the bridges use the {datapath} datapath: only the kernel datapath (system) offloads flows "
                  f"to the NIC through TC")
    else:
        reason = "ovs-vswitchd offloads flows to the NIC through TC"
    return OffloadStatus(enabled=enabled, active=enabled and datapath == "system",
                         tc_policy=other_config.get("tc-policy", "none"), datapath=datapath,
                         pfs=tuple(pf.name for pf in pfs if pf.switchdev), vfs_free=vfs_free,
                         vfs_in_use=vfs_in_use, reason=reason)
