"""SR-IOV discovery from sysfs: physical functions, virtual functions and VF representors.

Only files and symlinks are read, below a configurable root (``[hwoffload] sysfs-root``,
``/sys`` on a real node; the lab's constructed tree in tests), so the same code runs on
hardware and on the stand-in. What it reads (the kernel's layout, as sriovnet and
ovn-kubernetes read it):

* ``bus/pci/devices/<VF>/physfn`` -> the PF's PCI directory; a device without it is no VF;
* ``bus/pci/devices/<PF>/virtfn<N>`` -> the VF's PCI directory: ``N`` is the VF index;
* ``bus/pci/devices/<dev>/net/<netdev>``: the netdev of a function while it is in the
  namespace reading sysfs (a VF moved into a pod's namespace has none here);
* ``class/net/<netdev>/phys_switch_id``: the eswitch id, present and non-empty only in
  switchdev mode; a VF representor has the same id as its PF;
* ``class/net/<netdev>/phys_port_name``: ``p<N>`` for the PF's uplink, ``pf<P>vf<N>`` (older
  kernels: ``vf<N>`` or ``<N>``) for the representor of VF ``N`` of PF ``P``;
* ``class/net/<pf>/device/sriov_totalvfs`` and ``sriov_numvfs``: an SR-IOV capable PF.

Errors are :class:`DeviceError` with a message meant for the CNI runtime's user.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_VF_PORT_NAME = re.compile(r"^(?:pf(?P<pf>\d+))?vf(?P<vf>\d+)$|^(?P<bare>\d+)$")
_PF_PORT_NAME = re.compile(r"^p(?P<pf>\d+)$")
# Representors of VFs and sub-functions: their ``device`` is the PF's PCI function too.
_REPRESENTOR_PORT_NAME = re.compile(r"^(?:pf\d+)?(?:vf|sf)\d+$|^\d+$")


class DeviceError(Exception):
    """A device ID that cannot be wired: the message says why."""


@dataclass(frozen=True)
class PhysicalFunction:
    """An SR-IOV capable PF netdev; ``switch_id`` is empty unless its eswitch is in switchdev mode."""

    name: str
    pci: str
    switch_id: str
    total_vfs: int
    num_vfs: int

    @property
    def switchdev(self) -> bool:
        return bool(self.switch_id)


@dataclass(frozen=True)
class VirtualFunction:
    """One VF: its PCI address, its PF, its index there, and its netdev while it is on the host."""

    pci: str
    index: int
    pf: PhysicalFunction
    netdev: str | None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        # phys_switch_id of a PF in legacy mode fails with EOPNOTSUPP on a real kernel.
        return ""


def _int(path: Path) -> int:
    text = _read(path)
    return int(text) if text.isdigit() else 0


class Sysfs:
    """Read-only view of a sysfs tree rooted at ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _pci(self, address: str) -> Path:
        return self.root / "bus" / "pci" / "devices" / address

    def _netdevs(self, device: Path) -> list[str]:
        try:
            return sorted(os.listdir(device / "net"))
        except OSError:
            return []

    def _class_net(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root / "class" / "net"))
        except OSError:
            return []

    def physical_functions(self) -> list[PhysicalFunction]:
        """Every SR-IOV capable PF netdev (with ``device/sriov_totalvfs``), switchdev or not; not the
        representors, whose ``device`` is the PF too."""
        found = []
        for name in self._class_net():
            netdev = self.root / "class" / "net" / name
            device = netdev / "device"
            if not (device / "sriov_totalvfs").exists() \
                    or _REPRESENTOR_PORT_NAME.match(_read(netdev / "phys_port_name")):
                continue
            found.append(PhysicalFunction(
                name=name, pci=os.path.basename(os.path.realpath(device)),
                switch_id=_read(netdev / "phys_switch_id"), total_vfs=_int(device / "sriov_totalvfs"),
                num_vfs=_int(device / "sriov_numvfs")))
        return found

    def _pf_of(self, pf_pci: str) -> PhysicalFunction:
        names = self._netdevs(self._pci(pf_pci))
        if not names:
            raise DeviceError(f"the PF {pf_pci} has no network device on this host")
        for pf in self.physical_functions():
            if pf.name in names:
                return pf
        raise DeviceError(f"the PF {pf_pci} ({names[0]}) is not an SR-IOV capable network device")

    def virtual_function(self, address: str) -> VirtualFunction:
        """The VF at PCI ``address``; :class:`DeviceError` when there is none or it is no VF."""
        if not PCI_ADDRESS.match(address):
            raise DeviceError(f"deviceID {address!r} is not a PCI address (DDDD:BB:DD.F)")
        device = self._pci(address)
        if not device.is_dir():
            raise DeviceError(f"deviceID {address}: no such PCI device")
        physfn = device / "physfn"
        if not physfn.exists():
            raise DeviceError(f"deviceID {address} is not an SR-IOV virtual function (it has no physfn)")
        pf_dir = Path(os.path.realpath(physfn))
        pf = self._pf_of(pf_dir.name)
        index = None
        for entry in os.listdir(pf_dir):
            if entry.startswith("virtfn") and entry[6:].isdigit() \
                    and os.path.basename(os.path.realpath(pf_dir / entry)) == address:
                index = int(entry[6:])
                break
        if index is None:
            raise DeviceError(f"deviceID {address}: its PF {pf.pci} does not list it as a virtfn")
        netdevs = self._netdevs(device)
        return VirtualFunction(pci=address, index=index, pf=pf, netdev=netdevs[0] if netdevs else None)

    def pf_index(self, pf: PhysicalFunction) -> int | None:
        """The PF's number on its NIC from its ``phys_port_name`` (``p0`` -> 0), if it says."""
        found = _PF_PORT_NAME.match(_read(self.root / "class" / "net" / pf.name / "phys_port_name"))
        return int(found["pf"]) if found else None

    def representor(self, vf: VirtualFunction) -> str:
        """The representor netdev of ``vf``: same switch id as its PF, port name for its index."""
        if not vf.pf.switchdev:
            raise DeviceError(f"deviceID {vf.pci}: its PF {vf.pf.name} is not in switchdev mode "
                              f"(no phys_switch_id), so the VF has no representor")
        pf_index = self.pf_index(vf.pf)
        for name in self._class_net():
            if name == vf.pf.name:
                continue
            netdev = self.root / "class" / "net" / name
            if _read(netdev / "phys_switch_id") != vf.pf.switch_id:
                continue
            found = _VF_PORT_NAME.match(_read(netdev / "phys_port_name"))
            if not found:
                continue
            index = int(found["vf"] if found["vf"] is not None else found["bare"])
            if index != vf.index:
                continue
            if found["pf"] is not None and pf_index is not None and int(found["pf"]) != pf_index:
                continue
            return name
        raise DeviceError(f"deviceID {vf.pci}: no representor found for VF {vf.index} of {vf.pf.name} "
                          f"(no netdev with phys_switch_id {vf.pf.switch_id} and phys_port_name "
                          f"pf{pf_index if pf_index is not None else 0}vf{vf.index})")

    def virtual_functions(self, pf: PhysicalFunction) -> list[VirtualFunction]:
        """The VFs of ``pf`` (its ``virtfn<N>`` links), by index."""
        pf_dir = self._pci(pf.pci)
        try:
            entries = os.listdir(pf_dir)
        except OSError:
            return []
        vfs = []
        for entry in entries:
            if not (entry.startswith("virtfn") and entry[6:].isdigit()):
                continue
            device = Path(os.path.realpath(pf_dir / entry))
            netdevs = self._netdevs(device)
            vfs.append(VirtualFunction(pci=device.name, index=int(entry[6:]), pf=pf,
                                       netdev=netdevs[0] if netdevs else None))
        return sorted(vfs, key=lambda vf: vf.index)

    def pci_of_netdev(self, netdev: str) -> str | None:
        """The PCI address behind ``netdev`` (``class/net/<netdev>/device``), if it has one."""
        device = self.root / "class" / "net" / netdev / "device"
        return os.path.basename(os.path.realpath(device)) if device.exists() else None
