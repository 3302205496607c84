"""Stand-in SR-IOV NICs for the hwoffload plugin: a constructed sysfs tree whose VFs and
representors are the two ends of veth pairs.

A switchdev NIC gives each VF two netdevs: the VF itself (moved into a pod) and its
representor on the host (plugged into br-int); a frame sent on one comes out of the other,
which is what a veth pair does. :class:`StandinNic` writes the sysfs files the kernel
would show for such a NIC (``bus/pci/devices/<PF>/virtfn<N>``, ``<VF>/physfn``,
``net/<netdev>``, ``class/net/<netdev>/phys_switch_id`` and ``phys_port_name``,
``sriov_totalvfs``/``sriov_numvfs``) below a directory of its own, and creates the veth
pairs (VF end ``<pf>v<N>``, representor ``<pf>r<N>``, both down) in a node's network
namespace. The agent reads the tree through ``[hwoffload] sysfs-root``; the driver code
is the one real hardware runs.

Differences from hardware, by construction: the tree is static (a real VF moved into a
pod disappears from the host's ``<VF>/net/``; here its name stays, and the driver asks
netlink whether the netdev is on the host); the PF has no netdev of its own; and a veth
whose pod namespace is destroyed is destroyed with its peer, where a real VF comes back to
the host (:meth:`StandinNic.create_links` recreates missing pairs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ovnk_lab import paths
from ovnk_lab.procs import run


@dataclass(frozen=True)
class StandinNic:
    """One PF with ``vfs`` VFs below ``root`` (the value of ``[hwoffload] sysfs-root``).

    :param switchdev: ``False`` writes a PF in legacy mode (no ``phys_switch_id``), which the
        plugin must refuse.
    """

    root: Path
    pf: str = "pf0"
    pf_pci: str = "0000:03:00.0"
    vfs: int = 4
    switchdev: bool = True
    switch_id: str = "0cc47afffe1a2b3c"
    pf_index: int = 0

    def vf_pci(self, index: int) -> str:
        """VF ``index``'s PCI address: functions 2.. of the PF's bus, as a ConnectX lays them out."""
        domain_bus, _device_function = self.pf_pci.rsplit(":", 1)
        number = index + 2
        return f"{domain_bus}:{number // 8:02x}.{number % 8}"

    def vf_netdev(self, index: int) -> str:
        return f"{self.pf}v{index}"

    def representor(self, index: int) -> str:
        return f"{self.pf}r{index}"

    # -- sysfs ---------------------------------------------------------------------------

    def write_sysfs(self) -> Path:
        """Write (or rewrite) the tree; returns ``root``."""
        devices = self.root / "bus" / "pci" / "devices"
        class_net = self.root / "class" / "net"
        class_net.mkdir(parents=True, exist_ok=True)
        pf_dir = devices / self.pf_pci
        self._netdev(pf_dir, self.pf, port_name=f"p{self.pf_index}", switch_id=self.switch_id if self.switchdev else "")
        (pf_dir / "sriov_totalvfs").write_text(f"{self.vfs}\n")
        (pf_dir / "sriov_numvfs").write_text(f"{self.vfs}\n")
        for index in range(self.vfs):
            vf_dir = devices / self.vf_pci(index)
            self._netdev(vf_dir, self.vf_netdev(index), port_name="", switch_id="")
            self._link(vf_dir / "physfn", f"../{self.pf_pci}")
            self._link(pf_dir / f"virtfn{index}", f"../{self.vf_pci(index)}")
            if self.switchdev:
                # A representor has no PCI function of its own: the kernel shows it below the PF.
                rep_dir = pf_dir / "net" / self.representor(index)
                rep_dir.mkdir(parents=True, exist_ok=True)
                (rep_dir / "phys_switch_id").write_text(f"{self.switch_id}\n")
                (rep_dir / "phys_port_name").write_text(f"pf{self.pf_index}vf{index}\n")
                self._link(rep_dir / "device", "../..")
                self._link(class_net / self.representor(index),
                           f"../../bus/pci/devices/{self.pf_pci}/net/{self.representor(index)}")
        return self.root

    def _netdev(self, device: Path, name: str, *, port_name: str, switch_id: str) -> None:
        netdev = device / "net" / name
        netdev.mkdir(parents=True, exist_ok=True)
        for attribute, value in (("phys_port_name", port_name), ("phys_switch_id", switch_id)):
            path = netdev / attribute
            if value:
                path.write_text(f"{value}\n")
            else:
                path.unlink(missing_ok=True)
        self._link(netdev / "device", "../..")
        self._link(self.root / "class" / "net" / name, f"../../bus/pci/devices/{device.name}/net/{name}")

    @staticmethod
    def _link(path: Path, target: str) -> None:
        if path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    def remove_sysfs(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- links -----------------------------------------------------------------------------

    def _ip(self, netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["-n", netns] if netns else []
        return run([paths.system_bin("ip"), *prefix, *args], check=check)

    def create_links(self, netns: str | None) -> None:
        """Create each VF/representor veth pair that is missing (both ends down) in ``netns``."""
        for index in range(self.vfs):
            vf, rep = self.vf_netdev(index), self.representor(index)
            if self._ip(netns, "link", "show", rep, check=False).returncode == 0:
                continue
            self._ip(netns, "link", "add", vf, "type", "veth", "peer", "name", rep)

    def remove_links(self, netns: str | None) -> None:
        """Delete the pairs (a representor takes its VF along, wherever the VF is)."""
        for index in range(self.vfs):
            self._ip(netns, "link", "del", self.representor(index), check=False)

    def create(self, netns: str | None) -> StandinNic:
        self.write_sysfs()
        self.create_links(netns)
        return self

    def remove(self, netns: str | None) -> None:
        self.remove_links(netns)
        self.remove_sysfs()
