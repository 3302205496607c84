"""The context handed to node-agent and CNI hooks: public facades only.

Plugins reach the kernel, the local OVS and the API server only through these
objects (``ctx.net``, ``ctx.ovs``, ``ctx.flows``, ``ctx.kube``); they never
call pyroute2, ``ovs-vsctl`` or ``ovs-ofctl`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Protocol

if TYPE_CHECKING:
    import threading

    from prometheus_client import CollectorRegistry

    from ovnk.core.config import Config
    from ovnk.core.kube.client import KubeClient
    from ovnk.core.kube.events import EventRecorder
    from ovnk.core.node.flows import FlowManager
    from ovnk.core.node.net import NetFacade
    from ovnk.core.node.ovs import OvsFacade
    from ovnk.core.plugins import OvnkPluginManager


@dataclass(frozen=True)
class NodeContext:
    """Everything a node-side hook may use.

    :ivar config: the effective configuration (``config.plugin_settings(name)``).
    :ivar pm: the plugin manager (call hooks with keyword arguments).
    :ivar kube: the Kubernetes client (raw JSON objects).
    :ivar node_name: the Kubernetes name of this node.
    :ivar ovs: the local Open_vSwitch database (bridges, ports, external_ids, waits).
    :ivar flows: OpenFlow of the bridges the agent owns, by owner (cookie).
    :ivar net: netlink in the node's network namespace; ``NetFacade(netns=path)``
        opens another namespace (a pod's).
    :ivar registry: the process's Prometheus registry.
    :ivar events: records Kubernetes events.
    :ivar gateway_bridge: the shared-gateway bridge (``breth0``), once set up.
    """

    config: Config
    pm: OvnkPluginManager
    kube: KubeClient
    node_name: str
    ovs: OvsFacade
    flows: FlowManager
    net: NetFacade
    registry: CollectorRegistry
    events: EventRecorder
    gateway_bridge: str = ""


class NodeManager(Protocol):
    """A long-running node-side loop returned by ``ovnk_node_managers``; core runs each in a thread."""

    name: str

    def run(self, stop: threading.Event) -> None:
        """Keep the desired state until ``stop`` is set (resync on a timer; return promptly when stopped)."""
        ...
