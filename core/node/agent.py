"""The node agent process (``ovnk node``): shared gateway, management port, CNI server, node controllers.

Start-up, each step logging what it waits for and failing with a message
that says why (ovn-kubernetes.md §3.3, shared-gateway mode):

1. health endpoints on ``[node] health-bind-address`` (loopback) and /metrics on
   ``[node] metrics-bind-address``,
   ``ovnk_register_metrics``;
2. the shared informers start; wait for its own Node object;
3. local Open_vSwitch through ovsdbapp (also the ownership ledger,
   :mod:`~ovnk.core.node.owners`); the node state of owners that are no
   longer enabled is removed (:mod:`~ovnk.core.node.cleanup`); the shared
   gateway bridge (:mod:`~ovnk.core.node.gateway`), then core's keys of
   ``Open_vSwitch external_ids``: ``system-id`` (kept when present, so the
   chassis survives restarts), ``hostname``, ``ovn-remote``,
   ``ovn-encap-type``/``-ip``, ``ovn-bridge-datapath-type``,
   ``ovn-bridge-mappings`` (core's ``physnet:<bridge>``, other owners' and
   unowned mappings kept),
   ``ovn-monitor-all``, ``ovn-remote-probe-interval``;
4. publish chassis id, primary address, gateway config, host CIDRs and encap
   IPs on its Node; start the CNI server: it answers STATUS with 50 and ADD
   with 11 (try again later) naming the step still running, until set-up ended
   (so no ADD is served before ``ovnk_node_setup`` ran); DEL works from here on;
5. wait for ``k8s.ovn.org/node-subnets`` (the controller allocates it), set
   up the management port (:mod:`~ovnk.core.node.mgmtport`), publish its MAC;
6. ``ovnk_node_setup``; the managed bridges' flows are written (all owners at
   once); ``ovnk_node_annotations`` joins the published set;
7. the node controllers start on the shared informers, core's (``flows`` and
   ``ovs-vswitchd``: every managed bridge rewritten every 15 s and after an
   ovs-vswitchd restart; ``gateway``; ``node-annotations``) and those of
   ``ovnk_node_controllers``; then ``ovnk_node_managers`` get a thread each;
8. ready: the CNI config file is written and ``/readyz`` answers 200.

A plugin whose ``ovnk_node_setup``, ``ovnk_node_controllers``,
``ovnk_node_managers`` or first ``ovnk_node_annotations`` raises stops
start-up with a message naming the plugin and the hook. After start-up a
failing reconcile is retried with backoff and a failing annotation
contribution is logged naming the plugin.

A restart repeats all of it without disturbing wired pods: every step
compares before it writes, and nothing here deletes pod ports.

``kill -USR1 <pid>`` writes every thread's stack to the log (stderr): the way
to see what a stuck agent is waiting for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from prometheus_client import CollectorRegistry

from ovnk.cni.install import install_configured_shim
from ovnk.cni.server import CniServer
from ovnk.core.bootstrap import Runtime
from ovnk.core.config import CniSettings
from ovnk.core.errors import StartupError
from ovnk.core.health import HEALTH_ENDPOINTS
from ovnk.core.health import METRICS
from ovnk.core.health import HealthServer
from ovnk.core.health import HealthState
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.events import EventRecorder
from ovnk.core.kube.informer import CallbackHandler
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.informer import InformerFactory
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.metrics import new_registry
from ovnk.core.metrics import node_metrics
from ovnk.core.node.chassis_tls import ChassisCertError
from ovnk.core.node.chassis_tls import configure_ovn_controller_ssl
from ovnk.core.node.chassis_tls import ensure_chassis_certificate
from ovnk.core.node.cleanup import release_disabled_owners
from ovnk.core.node.cni_handler import CniHandler
from ovnk.core.node.cni_handler import PodCache
from ovnk.core.node.context import NodeContext
from ovnk.core.node.context import NodeManager
from ovnk.core.node.flows import FlowError
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.gateway import GatewayInfo
from ovnk.core.node.gateway import SharedGateway
from ovnk.core.node.mgmtport import setup_management_port
from ovnk.core.node.net import NetError
from ovnk.core.node.net import NetFacade
from ovnk.core.node.nft import NftError
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.ovn_health import southbound_connected
from ovnk.core.node.ovs import MONITORED_COLUMNS
from ovnk.core.node.ovs import OvsError
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.node.owners import CORE_OWNER
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.publish import NodeAnnotator
from ovnk.core.node.publish import compact_json
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.process import stop_on_signals
from ovnk.core.reconcile.runner import NODE_PREFIX
from ovnk.core.reconcile.runner import ControllerRunner
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import naming as n

logger = logging.getLogger(__name__)

T = TypeVar("T")

CNI_NETWORK_NAME = "ovn-kubernetes"
OVS_CONNECT_TIMEOUT = 60.0
WAIT_LOG_INTERVAL = 30.0
MANAGER_RESTART_DELAY = 5.0
CACHE_SYNC_TIMEOUT = 60.0


def cni_config(settings: CniSettings) -> str:
    """The CNI config file's content (``[cni] conf-version``, network name, the shim as plugin type)."""
    return json.dumps({"cniVersion": settings.conf_version, "name": CNI_NETWORK_NAME, "type": settings.plugin},
                      indent=2) + "\n"


def write_cni_config(settings: CniSettings) -> bool:
    """Write the CNI config file atomically, only when its content changes; ``True`` when written."""
    path = os.path.join(settings.conf_dir, settings.conf_file)
    content = cni_config(settings)
    try:
        with open(path) as handle:
            if handle.read() == content:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(settings.conf_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{settings.conf_file}.", dir=settings.conf_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    logger.info("wrote CNI config %s", path)
    return True


class NodeAgent:
    """All parts of one running node agent; :meth:`start` and :meth:`stop` (CLI, tests).

    :param stop: set it to interrupt start-up waits and stop the managers.
    """

    def __init__(self, runtime: Runtime, *, stop: threading.Event | None = None) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.node_name = self.config.node_name
        self.stop_event = stop or threading.Event()
        self.phase = "starting"
        self.setup_done = False
        self.state = HealthState()
        self.http_servers: list[HealthServer] = []
        self.kube: KubeClient | None = None
        self.events: EventRecorder | None = None
        self.informers: InformerFactory | None = None
        self.runner: ControllerRunner | None = None
        self.nodes: Informer | None = None
        self.pods: PodCache | None = None
        self.ovs_client: OvsdbClient | None = None
        self.ovs: OvsFacade | None = None
        self.net: NetFacade | None = None
        self.nft: NftFacade | None = None
        self.gateway: SharedGateway | None = None
        self.annotator: NodeAnnotator | None = None
        self.ctx: NodeContext | None = None
        self.cni_server: CniServer | None = None
        self.threads: list[threading.Thread] = []
        self._node_changed = threading.Condition()

    # -- helpers -------------------------------------------------------------------

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        logger.info("node %s: %s", self.node_name, phase)

    def setup_pending(self) -> str | None:
        """What the agent is still doing before it can serve ADD (``None`` when done)."""
        return None if self.setup_done else self.phase

    def _wait(self, what: str, check: Callable[[], T | None]) -> T:
        """Block until ``check()`` gives a value, re-checking on every Node event; log while waiting."""
        started = time.monotonic()
        logged = started
        while True:
            result = check()
            if result is not None:
                return result
            if self.stop_event.is_set():
                raise StartupError(f"stopped while waiting for {what}")
            now = time.monotonic()
            if now - logged >= WAIT_LOG_INTERVAL:
                logger.info("node %s: still waiting for %s (%.0fs)", self.node_name, what, now - started)
                logged = now
            with self._node_changed:
                self._node_changed.wait(0.5)

    def _on_node_event(self, *_objs: Any) -> None:
        with self._node_changed:
            self._node_changed.notify_all()

    def _node(self) -> dict[str, Any] | None:
        assert self.nodes is not None
        return self.nodes.store.get(self.node_name)

    # -- start-up ------------------------------------------------------------------

    def _serve_health_and_metrics(self, registry: CollectorRegistry) -> None:
        """/healthz and /readyz on ``health-bind-address`` (loopback by default: the kubelet's
        probes come from the host network), /metrics on ``metrics-bind-address``; one listener
        serves all three when both name the same address."""
        node = self.config.node
        listeners: dict[str, set[str]] = {}
        if node.health_bind_address:
            listeners.setdefault(node.health_bind_address, set()).update(HEALTH_ENDPOINTS)
        if node.metrics_bind_address:
            listeners.setdefault(node.metrics_bind_address, set()).add(METRICS)
        for bind, endpoints in listeners.items():
            server = HealthServer(bind, registry, self.state, endpoints=frozenset(endpoints))
            server.start()
            self.http_servers.append(server)

    def start(self) -> NodeAgent:
        """Run start-up (module docstring); kernel and OVS failures become a :class:`StartupError`
        naming the step."""
        try:
            return self._start()
        except (NetError, OvsError, FlowError, NftError, OwnershipError) as exc:
            raise StartupError(f"node {self.node_name}: {self.phase} failed: {exc}") from exc

    def _start(self) -> NodeAgent:
        started = time.monotonic()
        cfg = self.config
        rt = self.runtime
        registry = new_registry(component="node")
        rt.pm.hook.ovnk_register_metrics(registry=registry)
        ovn_run_dir = cfg.node.ovn_run_dir
        node_metrics(registry).sb_connected.set_function(lambda: southbound_connected(ovn_run_dir))
        self.state.readiness["setup"] = lambda: None if self.setup_done else self.phase
        self.state.readiness["cni"] = lambda: None if self.cni_server is not None else "CNI server not started"
        self._serve_health_and_metrics(registry)

        self.kube = KubeClient.from_settings(cfg.kubernetes)
        self.events = events = EventRecorder(self.kube, component="ovnk-node", host=self.node_name)
        # One set of shared informers for the agent: its Node, its pods, and every node controller's watch.
        self.informers = informers = InformerFactory(self.kube, registry=registry)
        informers.start()
        self.nodes = informers.informer(NODES, field_selector=f"metadata.name={self.node_name}")
        self.nodes.add_handler(CallbackHandler(on_add=self._on_node_event, on_update=self._on_node_event,
                                               on_delete=self._on_node_event))
        self._set_phase(f"waiting for the Node object {self.node_name}")
        self._wait(f"Node {self.node_name}", self._node)

        self._set_phase(f"connecting to the local Open_vSwitch database at {cfg.ovs.address}")
        self.ovs_client = OvsdbClient(remote=cfg.ovs.address, schema="Open_vSwitch", name="ovs", leader_only=False,
                                      columns=MONITORED_COLUMNS,
                                      inactivity_probe_ms=cfg.default.inactivity_probe, timeout=30.0,
                                      registry=registry).start(timeout=OVS_CONNECT_TIMEOUT)
        # The OVS database is also the ledger of what each owner created (ovnk.core.node.owners).
        self.ovs = ovs = OvsFacade(self.ovs_client, owners=Owners(rt.pm.enabled))
        self.state.liveness["ovs"] = lambda: None if ovs.client.connected else "Open_vSwitch DB disconnected"
        self.net = NetFacade(ledger=ovs)
        self.nft = NftFacade(ledger=ovs)
        flows = FlowManager(run_dir=cfg.ovs.run_dir, ledger=ovs)
        self.annotator = NodeAnnotator(kube=self.kube, node_name=self.node_name, pm=rt.pm, claims=rt.claims,
                                       nodes=self.nodes, ledger=ovs)
        self._set_phase("removing the node state of plugins that are not enabled")
        release_disabled_owners(ovs=ovs, net=self.net, nft=self.nft, flows=flows, annotator=self.annotator)
        self.pods = PodCache(informers.informer(PODS, field_selector=f"spec.nodeName={self.node_name}"),
                             kube=self.kube, on_change=ovs.wake)

        self._set_phase("setting up the shared gateway bridge")
        self.gateway = SharedGateway(config=cfg, node_name=self.node_name, ovs=ovs, net=self.net, flows=flows)
        info = self.gateway.setup()
        # `ovnk release-uplink` (OVS stopping) deletes the bridge; only a new start sets it up again.
        self.state.liveness["gateway"] = self.gateway.released
        system_id, encap_ip = self._configure_ovs(info)
        self.runner = ControllerRunner(informers=informers, workers=1, registry=registry, events=events,
                                       metrics_prefix=NODE_PREFIX)
        self.ctx = ctx = NodeContext(config=cfg, pm=rt.pm, kube=self.kube, node_name=self.node_name, ovs=ovs,
                                     flows=flows, net=self.net, nft=self.nft, registry=registry, events=events,
                                     informers=informers, controllers=self.runner, gateway_bridge=info.bridge)
        self.annotator.set_core(self._gateway_annotations(info, system_id, encap_ip))
        self.annotator.add_source(self._host_cidrs)
        self.annotator.publish()

        self._set_phase(f"installing the CNI shim into {cfg.cni.bin_dir}")
        try:
            install_configured_shim(cfg.cni)
        except (OSError, ValueError, RuntimeError) as exc:
            # e.g. the native shim was never built: the message says how to build it.
            raise StartupError(f"node {self.node_name}: {self.phase} failed: {exc}") from None
        handler = CniHandler(ctx, self.pods, registry=registry, setup_pending=self.setup_pending)
        ctx.cni.bind(handler)
        self.cni_server = CniServer(cfg.cni.socket_path, handler, registry=registry)
        self.cni_server.start()

        self._set_phase(f"waiting for {ann.NODE_SUBNETS} on node {self.node_name} (allocated by the controller)")
        subnets = self._wait(f"{ann.NODE_SUBNETS} of node {self.node_name}", self._node_subnets)
        self._set_phase("setting up the management port")
        mgmt = setup_management_port(
            config=cfg, node_name=self.node_name, ovs=ovs, net=self.net, subnets=subnets,
            provider=lambda name, iface_id, mtu: rt.pm.hook.ovnk_node_management_port(
                ctx=ctx, name=name, iface_id=iface_id, mtu=mtu))
        self.annotator.set_core({ann.NODE_MGMT_PORT_MAC: compact_json({"default": mgmt.mac})})
        self.annotator.publish()

        self._set_phase("running ovnk_node_setup")
        rt.pm.call_each("ovnk_node_setup", ctx=ctx)
        # Every owner has declared its flows now: write each managed bridge whole (this is also
        # where the flows of a plugin switched off since the last run disappear).
        self._set_phase("writing the flows of the managed bridges")
        self.gateway.sync_all_flows()
        self._set_phase("publishing the node annotations of the plugins")
        self.annotator.attach(ctx)
        self.annotator.publish(strict=True)

        self._set_phase("starting the node controllers")
        specs = self._core_controllers(ctx)
        specs += [spec for found in rt.pm.call_each("ovnk_node_controllers", ctx=ctx) for spec in found]
        for spec in specs:
            self.runner.add(spec)
        self.runner.start_watches()
        if not self.runner.wait_for_sync(CACHE_SYNC_TIMEOUT):
            raise StartupError(f"the node controllers' watches did not sync within {CACHE_SYNC_TIMEOUT:.0f}s: "
                               f"{', '.join(self.runner.unsynced())}")
        self.runner.start_workers()
        managers: list[NodeManager] = [m for found in rt.pm.call_each("ovnk_node_managers", ctx=ctx) for m in found]
        for manager in managers:
            self._start_manager(manager)

        self._set_phase("waiting for the pod cache")
        if not self.pods.wait_for_sync(60):
            raise StartupError(f"the pods of node {self.node_name} could not be listed within 60s")
        self.setup_done = True
        self.phase = "ready"
        write_cni_config(cfg.cni)
        self.state.set_ready(True)
        node_metrics(registry).ready_duration.set(time.monotonic() - started)
        logger.info("node %s ready in %.1fs: gateway %s, management port %s (%s), %d node controllers, "
                    "%d managers", self.node_name, time.monotonic() - started, info.bridge, mgmt.name, mgmt.mac,
                    len(specs), len(managers))
        return self

    def _core_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        """Core's node controllers: the flow manager's resync and vswitchd watch, the gateway, the annotator."""
        assert self.gateway is not None and self.annotator is not None and self.ovs is not None
        gateway = self.gateway.spec()
        self.ovs.subscribe(lambda: ctx.enqueue(gateway.name, ctx.gateway_bridge))
        return [*ctx.flows.controllers(enqueue=ctx.enqueue), gateway, self.annotator.spec()]

    def _configure_ovs(self, info: GatewayInfo) -> tuple[str, str]:
        assert self.ovs is not None
        cfg = self.config
        current = self.ovs.external_ids()
        system_id = current.get("system-id") or str(uuid.uuid4())
        self._ensure_chassis_certificate(system_id)
        primary = info.primary_ipv4
        assert primary is not None
        encap_ip = cfg.node.encap_ip or str(primary.ip)
        changed = self.ovs.set_bridge_mappings(CORE_OWNER, {n.PHYSNET: info.bridge})
        if self.ovs.set_owned_keys(CORE_OWNER, "external_ids", {
            "system-id": system_id,
            "hostname": self.node_name,
            "ovn-remote": cfg.ovnsouth.address,
            "ovn-encap-type": cfg.default.encap_type,
            "ovn-encap-ip": encap_ip,
            "ovn-bridge-datapath-type": cfg.ovs.datapath_type,
            "ovn-monitor-all": "true",
            "ovn-remote-probe-interval": str(cfg.default.inactivity_probe),
        }) or changed:
            logger.info("configured Open_vSwitch external_ids: system-id %s, encap %s %s, remote %s", system_id,
                        cfg.default.encap_type, encap_ip, cfg.ovnsouth.address)
        return system_id, encap_ip

    def _ensure_chassis_certificate(self, system_id: str) -> None:
        """With a node CA configured, this node's Southbound certificate (CN = its chassis name) for
        ovn-controller (:mod:`~ovnk.core.node.chassis_tls`)."""
        cfg = self.config
        if not (cfg.node.chassis_ca_cert or cfg.node.chassis_ca_key):
            return
        if not (cfg.node.chassis_ca_cert and cfg.node.chassis_ca_key and cfg.ovnsouth.client_cacert):
            raise StartupError("[node] chassis-ca-cert and chassis-ca-key go together, and need [ovnsouth] "
                               "client-cacert (the CA ovn-controller verifies the Southbound with)")
        try:
            issued = ensure_chassis_certificate(ca_cert=cfg.node.chassis_ca_cert, ca_key=cfg.node.chassis_ca_key,
                                                chassis=system_id, directory=cfg.node.chassis_cert_dir)
            configure_ovn_controller_ssl(ovs_address=cfg.ovs.address, key=issued.key, cert=issued.cert,
                                         ca_cert=cfg.ovnsouth.client_cacert)
        except ChassisCertError as exc:
            raise StartupError(f"node {self.node_name}: chassis certificate: {exc}") from exc

    def _gateway_annotations(self, info: GatewayInfo, system_id: str, encap_ip: str) -> dict[str, str | None]:
        primary = info.primary_ipv4
        return {
            ann.NODE_CHASSIS_ID: system_id,
            ann.NODE_PRIMARY_IFADDR: compact_json({"ipv4": str(primary)}),
            ann.L3_GATEWAY_CONFIG: ann.format_gateway_config(info.gateway_config(self.node_name, self.config)),
            ann.NODE_ENCAP_IPS: compact_json([encap_ip]),
        }

    def _host_cidrs(self) -> dict[str, str | None]:
        assert self.net is not None
        skip = {"lo", self.config.node.mgmt_port}
        cidrs = sorted({str(a) for name, addrs in self.net.all_addresses().items() if name not in skip
                        for a in addrs if a.version == 4 and not a.ip.is_loopback})
        return {ann.HOST_CIDRS: compact_json(cidrs)}

    def _node_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
        node = self._node()
        if node is None:
            return None
        try:
            return ann.node_subnets(node) or None
        except ann.AnnotationError as exc:
            logger.warning("node %s: %s", self.node_name, exc)
            return None

    def _start_manager(self, manager: NodeManager) -> None:
        name = getattr(manager, "name", type(manager).__name__)

        def loop() -> None:
            while not self.stop_event.is_set():
                try:
                    manager.run(self.stop_event)
                    return
                except Exception:
                    logger.exception("node manager %s failed; restarting it in %.0fs", name, MANAGER_RESTART_DELAY)
                    self.stop_event.wait(MANAGER_RESTART_DELAY)

        thread = threading.Thread(target=loop, name=f"manager-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def report_startup_failure(self, exc: Exception) -> None:
        """A Warning event on the Node (``kubectl describe node`` shows why the agent is not ready)."""
        node = self._node() if self.nodes is not None else None
        if self.events is not None and node is not None:
            self.events.event(node, type="Warning", reason="NodeAgentStartFailed",
                              message=f"ovnk node agent could not start ({self.phase}): {exc}")

    # -- shutdown ------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        self.state.set_ready(False)
        if self.cni_server is not None:
            self.cni_server.stop()
            self.cni_server = None
        if self.runner is not None:
            self.runner.stop()
        for thread in self.threads:
            thread.join(5)
        if self.config.cni.remove_conf_on_exit:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.config.cni.conf_dir, self.config.cni.conf_file))
                logger.info("removed the CNI config (remove-conf-on-exit)")
        if self.informers is not None:
            self.informers.stop()
        if self.net is not None:
            self.net.close()
        if self.ovs_client is not None:
            self.ovs_client.stop()
        for server in self.http_servers:
            server.stop()
        if self.kube is not None:
            self.kube.close()


def run(runtime: Runtime) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    stop = stop_on_signals()
    agent = NodeAgent(runtime, stop=stop)
    try:
        try:
            agent.start()
        except Exception as exc:
            if stop.is_set():
                return 0
            agent.report_startup_failure(exc)
            raise
        while not stop.wait(0.5):
            pass
    finally:
        agent.stop()
        runtime.shutdown()
    return 0
