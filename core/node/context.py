"""The context handed to node-agent and CNI hooks: public facades only.

Plugins reach the kernel, the local OVS and the API server only through these
objects (``ctx.net``, ``ctx.nft``, ``ctx.ovs``, ``ctx.flows``, ``ctx.kube``,
``ctx.informers``); they never call pyroute2, ``nft``, ``ovs-vsctl`` or
``ovs-ofctl`` themselves. State a plugin creates through them is named after
the plugin (its *owner*), so the agent can remove it when the plugin is
switched off (:mod:`ovnk.core.node.owners`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ovnk.cni.types import CniRequest
    from ovnk.cni.types import CniResult
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


class CniCalls(Protocol):
    """What :class:`CniFacade` calls: the node agent's CNI handler (``ovnk.core.node.cni_handler``)."""

    def add(self, request: CniRequest) -> CniResult: ...

    def delete(self, request: CniRequest) -> None: ...

    def check(self, request: CniRequest) -> None: ...


class CniFacade:
    """``ctx.cni``: further CNI operations through core's own path, for plugins that delegate.

    A Multus-like plugin that wires more interfaces when the runtime asks for
    one (each network attachment of the pod) runs them here, from a CNI hook
    (``ovnk_cni_add``, ``ovnk_cni_del``): :meth:`add` does for its request
    exactly what the CNI server does for the runtime's (``ovnk_cni_network``,
    the wait for the pod annotation, the driver of
    ``ovnk_cni_interface_driver``, the wait for ``ovn-installed``,
    ``ovnk_cni_add``), :meth:`delete` and :meth:`check` likewise. Build the
    requests with ``CniRequest.parse(env, config_text)``, as the runtime's
    environment and netconf would be. The caller holds the runtime request's
    container, so requests for the same container are not serialised again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handler: CniCalls | None = None

    def bind(self, handler: CniCalls) -> None:
        """Core: connect the node agent's CNI handler (done before the CNI server opens)."""
        with self._lock:
            self._handler = handler

    def _calls(self) -> CniCalls:
        with self._lock:
            handler = self._handler
        if handler is None:
            from ovnk.cni.types import ERR_TRY_AGAIN_LATER
            from ovnk.cni.types import CniError

            raise CniError(ERR_TRY_AGAIN_LATER, "the node agent's CNI handler is not running yet")
        return handler

    def add(self, request: CniRequest) -> CniResult:
        """ADD ``request`` as the CNI server would; raises ``CniError``. A failure leaves nothing wired."""
        return self._calls().add(request)

    def delete(self, request: CniRequest) -> None:
        """DEL ``request``; succeeds when nothing is left to remove."""
        self._calls().delete(request)

    def check(self, request: CniRequest) -> None:
        """CHECK ``request`` against its ``prevResult``; raises ``CniError`` on a mismatch."""
        self._calls().check(request)


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
    :ivar cni: further CNI operations through core's path (:class:`CniFacade`), for
        plugins that wire more interfaces than the runtime asked for.
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
    cni: CniFacade = field(default_factory=CniFacade)

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
