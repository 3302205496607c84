"""The context handed to controller hooks: public facades only.

Plugins reach the API server, the NB database, the caches and shared state
only through these objects; they never open connections themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ovnk.core.claims import Claims
    from ovnk.core.config import Config
    from ovnk.core.kube.client import KubeClient
    from ovnk.core.kube.events import EventRecorder
    from ovnk.core.kube.informer import InformerFactory
    from ovnk.core.kube.node_labels import NodeLabels
    from ovnk.core.kube.resources import Resource
    from ovnk.core.kube.selectors import LabelSelector
    from ovnk.core.ovn.connection import OvsdbClient
    from ovnk.core.ovn.connection import RowListener
    from ovnk.core.ovn.ids import OwnerRegistry
    from ovnk.core.ovn.ids import OwnerType
    from ovnk.core.ovn.reader import NbReader
    from ovnk.core.ovn.reader import RowSnapshot
    from ovnk.core.ovn.txn import NbTxn
    from ovnk.core.ovn.txn import TxnManager
    from ovnk.core.plugins import OvnkPluginManager
    from ovnk.core.reconcile.spec import ControllerSpec
    from ovnk.core.topology.state import TopologyState


class Controllers(Protocol):
    """The running controllers of a process (core's ``ControllerRunner``), as plugins see them."""

    def enqueue(self, name: str, key: str, *, after: float = 0.0) -> None:
        """Queue ``key`` for controller ``name`` now, or in ``after`` seconds as planned work."""
        ...

    def add(self, spec: ControllerSpec) -> None:
        """Start one more controller (its workers start once its watches have synced)."""
        ...

    def remove(self, name: str) -> bool:
        """Stop controller ``name``; ``False`` when it does not run."""
        ...

    def names(self) -> list[str]:
        """Names of the running controllers."""
        ...


class NbFacade:
    """NB access for reconcilers: transactions and snapshot reads."""

    def __init__(self, *, client: OvsdbClient, txns: TxnManager, reader: NbReader) -> None:
        self.client = client
        self.txns = txns
        self.reader = reader

    @property
    def controller(self) -> str:
        return self.txns.controller

    @contextmanager
    def transaction(self, *, reason: str, owner: str) -> Iterator[NbTxn]:
        """One atomic transaction, committed when the block exits cleanly."""
        with self.txns.transaction(reason=reason, owner=owner) as txn:
            yield txn

    def owned(self, owner: OwnerType, *, columns: tuple[str, ...] = ()) -> list[RowSnapshot]:
        return self.reader.owned(owner, columns=columns)

    def owned_by_name(self, owner: OwnerType, name: str, *, columns: tuple[str, ...] = ()) -> list[RowSnapshot]:
        return self.reader.owned_by_name(owner, name, columns=columns)

    def get(self, table: str, *, name: str | None = None, primary_id: str | None = None,
            columns: tuple[str, ...] = ()) -> RowSnapshot | None:
        return self.reader.get(table, name=name, primary_id=primary_id, columns=columns)

    def add_row_listener(self, listener: RowListener) -> None:
        """Call ``listener(event, row, updates)`` for every NB row change the IDL applies (``event``:
        ``"create"``, ``"update"`` or ``"delete"``), for a change no Kubernetes event announces.

        It runs on the NB connection thread with the connection lock held: it must be quick, must
        not block, read through :attr:`reader` or commit; typically it queues keys
        (:meth:`ControllerContext.enqueue`). A read done with :meth:`NbReader.read` and a listener
        see the rows in one order, so a key registered during a read misses no later change.
        """
        self.client.add_row_listener(listener)

    def has_column(self, table: str, column: str) -> bool:
        """Optional columns (e.g. ACL ``tier``) exist only on newer OVN schemas."""
        return self.client.has_column(table, column)

    def allows_key(self, table: str, column: str, key: str) -> bool:
        """Whether a map column's enum admits ``key`` (QoS ``action`` gained ``mark`` after OVN 23.03)."""
        return self.client.allows_key(table, column, key)


@dataclass(frozen=True)
class ControllerContext:
    """Everything a controller-side hook may use.

    :ivar config: the effective configuration (``config.plugin_settings(name)``).
    :ivar pm: the plugin manager (call hooks with keyword arguments).
    :ivar kube: the Kubernetes client (raw JSON objects).
    :ivar informers: shared informers; ``informers.informer(resource).store`` is a cache.
    :ivar nb: NB transactions and reads.
    :ivar owners: owner types claimed in this deployment.
    :ivar claims: every claim (CRDs, annotations, owner types).
    :ivar registry: the process's Prometheus registry.
    :ivar events: records Kubernetes events.
    :ivar topology: shared state of the default network (node facts, IP pools).
    :ivar is_leader: whether this process may write now.
    :ivar controllers: the running controllers: ``enqueue`` keys into any of
        them, ``add`` and ``remove`` controllers at runtime (one per secondary
        network, say).
    """

    config: Config
    pm: OvnkPluginManager
    kube: KubeClient
    informers: InformerFactory
    nb: NbFacade
    owners: OwnerRegistry
    claims: Claims
    registry: CollectorRegistry
    events: EventRecorder
    topology: TopologyState
    is_leader: Callable[[], bool]
    controllers: Controllers

    @property
    def controller_name(self) -> str:
        """The ``k8s.ovn.org/owner-controller`` of every row this process writes."""
        return self.config.controller.name

    def cache(self, resource: Resource) -> Any:
        """The shared cache (:class:`~ovnk.core.kube.cache.Store`) of ``resource``; its watch starts on first use."""
        return self.informers.informer(resource).store

    def enqueue(self, controller: str, key: str, *, after: float = 0.0) -> None:
        """Queue ``key`` for ``controller`` (any controller of this process, a plugin's or core's).

        Use it when something other than the controller's own watches changes
        what the key should look like: EgressIP re-runs the pods it selects,
        core re-runs a node's pods when the node's facts change. ``after``
        plans a re-check (a DNS answer's TTL) without keeping the process busy.

        :raises KeyError: no controller of that name runs.
        """
        self.controllers.enqueue(controller, key, after=after)

    @property
    def node_labels(self) -> NodeLabels:
        """Node labels written as an owner (``set(owner, node, {key: value | None})``); the labels of
        a plugin switched off are removed at the next start (:mod:`ovnk.core.kube.node_labels`)."""
        from ovnk.core.kube.node_labels import NodeLabels
        from ovnk.core.kube.resources import NODES

        return NodeLabels(self.kube, self.cache(NODES).get, ("core", *self.pm.enabled))

    def select(self, resource: Resource, selector: LabelSelector, *, namespace: str | None = None) -> list[Any]:
        """Cached objects of ``resource`` that ``selector`` matches (in ``namespace`` when given).

        Goes through a label index of the cache, not a scan of every object.
        """
        return list(self.cache(resource).select(selector, namespace=namespace))
