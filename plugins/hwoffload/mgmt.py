"""The management port on a VF (upstream ``--ovnkube-node-mgmt-port-netdev``), through core's
``ovnk_node_management_port`` hook.

With ``[hwoffload] mgmt-port-netdev=<VF netdev>`` the VF is renamed to the management port's name
(``ovn-k8s-mp0``) and stays in the node's namespace, and its representor becomes the ``br-int``
port with the management port's ``iface-id``; core gives the netdev its MAC, MTU, addresses and
routes. The VF's PCI address and its original name are recorded (``Open_vSwitch external_ids``,
owner ``hwoffload``), so a restart finds it renamed already, and an agent started with the setting
emptied renames it back, takes the representor off ``br-int`` and lets core create its internal
port again.
"""

from __future__ import annotations

import json
import logging
import time

from ovnk import NodeContext
from ovnk import OvnkError
from ovnk import StartupError
from ovnk.plugins.hwoffload.selection import VF_PCI
from ovnk.plugins.hwoffload.settings import HwOffloadSettings
from ovnk.plugins.hwoffload.sysfs import DeviceError
from ovnk.plugins.hwoffload.sysfs import Sysfs

logger = logging.getLogger(__name__)

OWNER = "hwoffload"
#: Open_vSwitch external_ids key: {"pci": ..., "netdev": ..., "representor": ...} of the management VF.
RECORD = "ovnk-hwoffload-mgmt-vf"


def _record(ctx: NodeContext) -> dict[str, str] | None:
    raw = ctx.ovs.external_ids().get(RECORD)
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def provide(ctx: NodeContext, settings: HwOffloadSettings, *, name: str, iface_id: str, mtu: int,
            selected: bool = True) -> bool | None:
    """The ``ovnk_node_management_port`` implementation (see the module docstring); on a node
    the plugin does not serve (``selected`` false) only a VF of an earlier run is given back."""
    recorded = _record(ctx)
    if not settings.mgmt_port_netdev or not selected:
        if recorded:
            release(ctx, name=name, recorded=recorded)
        return None
    try:
        return _plug(ctx, settings, name=name, iface_id=iface_id, mtu=mtu, recorded=recorded)
    except (DeviceError, OvnkError) as exc:
        if isinstance(exc, StartupError):
            raise
        raise StartupError(f"hwoffload: the management port on VF {settings.mgmt_port_netdev}: {exc}") from None


def _plug(ctx: NodeContext, settings: HwOffloadSettings, *, name: str, iface_id: str, mtu: int,
          recorded: dict[str, str] | None) -> bool:
    sysfs = Sysfs(settings.sysfs_root)
    netdev = settings.mgmt_port_netdev
    if recorded and recorded.get("netdev") == netdev and ctx.net.link(name) is not None:
        pci = recorded["pci"]  # renamed by an earlier run: a real VF's sysfs entry has the new name now
    else:
        if recorded and recorded.get("netdev") != netdev:
            release(ctx, name=name, recorded=recorded)
        pci = sysfs.pci_of_netdev(netdev) or ""
        if not pci:
            raise StartupError(f"hwoffload: mgmt-port-netdev {netdev} has no PCI device under {settings.sysfs_root}")
    vf = sysfs.virtual_function(pci)
    representor = sysfs.representor(vf)
    existing = ctx.ovs.interface(name)
    if existing is not None and existing.type == "internal":
        # Core's internal port of an earlier run holds the name the VF takes.
        ctx.ovs.delete_ports([existing.port or name], wait_vswitchd=True)
        deadline = time.monotonic() + 10
        while ctx.net.link(name) is not None:  # vswitchd deletes the netdev after the commit
            if time.monotonic() > deadline:
                raise StartupError(f"hwoffload: ovs-vswitchd did not remove the internal port {name}")
            time.sleep(0.02)
    if ctx.net.link(name) is None:
        if ctx.net.link(netdev) is None:
            raise StartupError(f"hwoffload: mgmt-port-netdev {netdev} is not in the node's network namespace")
        ctx.net.rename_link(netdev, name)
        logger.info("management port: VF %s (%s) renamed to %s", pci, netdev, name)
    ctx.ovs.set_owned_keys(OWNER, "external_ids", {RECORD: json.dumps(
        {"pci": pci, "netdev": netdev, "representor": representor}, sort_keys=True)})
    ctx.ovs.ensure_port("br-int", representor, external_ids={"iface-id": iface_id, "vf-netdev-name": netdev,
                                                             VF_PCI: pci}, wait_vswitchd=False)
    ctx.net.set_link(representor, mtu=mtu, up=True)
    return True


def release(ctx: NodeContext, *, name: str, recorded: dict[str, str]) -> None:
    """Give the management VF back: representor off br-int and down, the VF renamed back and down."""
    representor, netdev = recorded.get("representor", ""), recorded.get("netdev", "")
    if representor:
        ctx.ovs.delete_ports([representor])
        if ctx.net.link(representor) is not None:
            ctx.net.set_link(representor, up=False)
    if netdev and ctx.net.link(name) is not None and ctx.net.link(netdev) is None:
        ctx.net.rename_link(name, netdev)
    ctx.ovs.set_owned_keys(OWNER, "external_ids", {})
    logger.info("management port: VF %s returned as %s; core's internal port takes over", recorded.get("pci"),
                netdev)
