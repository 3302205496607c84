"""CNI for sandbox nodes: what goes into a node's ``/etc/cni/net.d`` and ``/opt/cni/bin``.

A :class:`CniProvider` is called once per node after its mount namespace
exists and before containerd and the kubelet start; it writes into the host
paths ``node.cni_conf_dir`` and ``node.cni_bin_dir``. :class:`BridgeCni` uses
Debian's reference plugins (``containernetworking-plugins``); pods of one node
share a kernel bridge, so same-node traffic works and cross-node pod traffic
does not (nothing routes the pod subnets). :class:`ExternalCni` leaves both
dirs to an agent in the node (the ovnk node agent writes its config and
installs its shim there); containerd picks the config up when it appears.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.kubenode import SandboxNode


class CniProvider(Protocol):
    """Puts a CNI config and plugins into a node before its kubelet starts (or leaves that to an agent)."""

    @property
    def name(self) -> str: ...

    @property
    def ready_without_agent(self) -> bool:
        """True when nodes become Ready with what :meth:`install` wrote."""
        ...

    def install(self, node: SandboxNode) -> None: ...


@dataclass(frozen=True)
class BridgeCni:
    """Debian's reference plugins: a kernel bridge ``cni0`` per node, host-local IPAM, one subnet per node."""

    pod_subnet: str = "10.250.{index}.0/24"
    mtu: int = 1400
    plugin_dir: Path = Path("/usr/lib/cni")

    @property
    def name(self) -> str:
        return "bridge"

    @property
    def ready_without_agent(self) -> bool:
        return True

    def subnet_for(self, node: SandboxNode) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_subnet.format(index=node.index))

    def install(self, node: SandboxNode) -> None:
        for plugin in ("bridge", "host-local", "loopback"):
            source = self.plugin_dir / plugin
            if not source.exists():
                raise StartupError(f"CNI plugin {source} not found; install containernetworking-plugins "
                                   f"({paths.SETUP_HINT})")
            target = node.cni_bin_dir / plugin
            if not target.exists():
                target.symlink_to(source)
        subnet = self.subnet_for(node)
        conf = {
            "cniVersion": "0.4.0",
            "name": "sandbox-bridge",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "mtu": self.mtu,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            }],
        }
        (node.cni_conf_dir / "10-sandbox-bridge.conflist").write_text(json.dumps(conf, indent=2))


@dataclass(frozen=True)
class ExternalCni:
    """Installs nothing: an agent in the node (ovnk node) writes conf and shim later."""

    @property
    def name(self) -> str:
        return "external"

    @property
    def ready_without_agent(self) -> bool:
        return False

    def install(self, node: SandboxNode) -> None:
        return None
