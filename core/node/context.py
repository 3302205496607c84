"""The context handed to node-agent and CNI hooks: public facades only.

Plugins reach the kernel, the local OVS and the API server only through these
objects (``ctx.net``, ``ctx.nft``, ``ctx.ovs``, ``ctx.flows``, ``ctx.kube``,
``ctx.informers``); they never call pyroute2, ``nft``, ``ovs-vsctl`` or
``ovs-ofctl`` themselves. State a plugin creates through them is named after
the plugin (its *owner*), so the agent can remove it when the plugin is
switched off (:mod:`ovnk.core.node.owners`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

if TYPE_CHECKING:
    import threading

    from prometheus_client import CollectorRegistry

    from ovnk.core.config import Config
    from ovnk.core.context import Controllers
    from ovnk.core.kube.client import KubeClient
    from ovnk.core.kube.events import EventRecorder
    from ovnk.core.kube.informer import InformerFactory
    from ovnk.core.kube.resources import Resource
    from ovnk.core.node.flows import FlowManager
    from ovnk.core.node.net import NetFacade
    from ovnk.core.node.nft import NftFacade
    from ovnk.core.node.ovs import OvsFacade
    from ovnk.core.plugins import OvnkPluginManager


@dataclass(frozen=True)
class NodeContext:
    """Everything a node-side hook may use.

    :ivar config: the effective configuration (``config.plugin_settings(name)``).
    :ivar pm: the plugin manager (call hooks with keyword arguments).
    :ivar kube: the Kubernetes client (raw JSON objects).
    :ivar node_name: the Kubernetes name of this node.
    :ivar ovs: the local Open_vSwitch database (bridges, ports, owned keys,
        change subscriptions, waits).
    :ivar flows: OpenFlow of the bridges the agent owns, by owner (cookie).
    :ivar net: netlink in the node's network namespace (links, addresses,
        routes, sysctls, owned ip rules and routes); ``NetFacade(netns=path)``
        opens another namespace (a pod's).
    :ivar nft: nftables tables by owner.
    :ivar registry: the process's Prometheus registry.
    :ivar events: records Kubernetes events.
    :ivar informers: the agent's shared informers (watch with a field or label
        selector: pods of this node are ``field_selector="spec.nodeName=<node>"``).
    :ivar controllers: the node controllers running in this agent.
    :ivar gateway_bridge: the shared-gateway bridge (``breth0``), once set up.
    """

    config: Config
    pm: OvnkPluginManager
    kube: KubeClient
    node_name: str
    ovs: OvsFacade
    flows: FlowManager
    net: NetFacade
    nft: NftFacade
    registry: CollectorRegistry
    events: EventRecorder
    informers: InformerFactory
    controllers: Controllers
    gateway_bridge: str = ""

    def enqueue(self, controller: str, key: str, *, after: float = 0.0) -> None:
        """Queue ``key`` for node controller ``controller`` (a plugin's or core's), now or in ``after`` seconds.

        For triggers that are not Kubernetes events: an OVS change
        (``ctx.ovs.subscribe(lambda: ctx.enqueue("mine", "br-ext"))``), a health
        check's result, a timer (``after``) planned from a reconcile.

        :raises KeyError: no node controller of that name runs.
        """
        self.controllers.enqueue(controller, key, after=after)

    def cache(self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None,
              field_selector: str | None = None) -> Any:
        """The shared cache (:class:`~ovnk.core.kube.cache.Store`) of a watch; it starts on first use."""
        return self.informers.informer(resource, namespace=namespace, label_selector=label_selector,
                                       field_selector=field_selector).store


class NodeManager(Protocol):
    """A long-running node-side service returned by ``ovnk_node_managers``; core runs each in a thread.

    For services that are not state to converge (egressip's health-check
    server, say); state the node must hold is a node controller's job
    (``ovnk_node_controllers``), which core resyncs.
    """

    name: str

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then return promptly (core restarts it after an exception)."""
        ...
