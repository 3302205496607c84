"""The hybrid overlay on an OVN node's agent: ``br-ext``, its ports and flows, and the host's routes.

Set-up (``ovnk_node_setup``, idempotent): bridge ``br-ext`` (the plugin's own:
deleted by the agent when the plugin is switched off; ``fail_mode=secure``, so
only our flows forward), the patch pair ``ext`` (on ``br-ext``) / ``int`` (on
``br-int``, ``iface-id=int-<node>``: the DR port the controller creates on the
node switch; recorded as the plugin's, so it goes with it too) and the VXLAN
port ``ext-vxlan`` (``remote_ip=flow``, ``key=flow``, ``dst_port`` =
``[hybrid_overlay] vxlan-port``). OVS encapsulates in userspace (the netdev
datapath): tunnel packets leave and arrive through the gateway bridge's IP.

The node controller ``hybrid-overlay`` (one key, ``br-ext``) converges the
rest from this node's annotations (subnet, DR IP and MAC, node id), its pods'
``k8s.ovn.org/pod-networks`` and the foreign nodes (label-selected watch):

* the flows of :mod:`.flows`: this node's under owner ``hybrid_overlay``, each
  foreign node's under an owner (and so a cookie) of its own,
  ``hybrid_overlay.<node>``;
* routes in the main table to the hybrid subnets (each cluster subnet, or each
  foreign node's subnet without them) via the DR IP on the management port, so
  the host reaches foreign pods through OVN;
* the ports, if someone removed them.

core's flow manager rewrites ``br-ext`` every 15 s and within about a second
of an ovs-vswitchd restart; the controller itself resyncs every 30 s.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NODES
from ovnk import PODS
from ovnk import ControllerSpec
from ovnk import NodeContext
from ovnk import ReconcileRequest
from ovnk import TableRoute
from ovnk import Watch
from ovnk import names
from ovnk.plugins.hybrid_overlay import flows as fl
from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay.metrics import HybridOverlayMetrics
from ovnk.plugins.hybrid_overlay.models import HybridOverlayError
from ovnk.plugins.hybrid_overlay.nb import port_name
from ovnk.plugins.hybrid_overlay.settings import HybridOverlaySettings

logger = logging.getLogger(__name__)

PLUGIN = "hybrid_overlay"
CONTROLLER = "hybrid-overlay"
KEY = fl.BRIDGE
MAIN_TABLE = 254
RESYNC = 30.0
INTEGRATION_BRIDGE = "br-int"
# Owner names are at most 63 characters of [A-Za-z0-9_.-] (they end up in OVS keys).
_OWNER_PART = re.compile(r"^[a-z0-9][a-z0-9.-]{0,47}$")


def remote_owner(node: str) -> str:
    """The flow owner (cookie) of one foreign node's flows: ``hybrid_overlay.<node>``, or a hash of a long name."""
    if _OWNER_PART.match(node):
        return f"{PLUGIN}.{node}"
    return f"{PLUGIN}.n-{hashlib.sha256(node.encode()).hexdigest()[:12]}"


def _annotations_changed(*keys: str) -> Any:
    def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        old_ann, new_ann = models.annotations_of(old), models.annotations_of(new)
        return any(old_ann.get(k) != new_ann.get(k) for k in keys)
    return changed


def _foreign_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(_annotations_changed(models.NODE_SUBNET, models.DR_MAC)(old, new)
                or models.internal_ip(old) != models.internal_ip(new))


class HybridOverlayNode:
    """Set-up and the node controller of one agent."""

    def __init__(self, ctx: NodeContext, settings: HybridOverlaySettings,
                 metrics: HybridOverlayMetrics | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.metrics = metrics
        self.node_selector = f"metadata.name={ctx.node_name}"
        self.pod_selector = f"spec.nodeName={ctx.node_name}"
        self._remote_owners: set[str] = set()
        self._broken: set[tuple[str, str]] = set()

    # -- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        ovs = self.ctx.ovs
        created = ovs.ensure_bridge(fl.BRIDGE, datapath_type=self.ctx.config.ovs.datapath_type, fail_mode="secure",
                                    owner=PLUGIN)
        self.ensure_ports()
        self.ctx.flows.manage(fl.BRIDGE)
        self.ctx.flows.set_flows(fl.BRIDGE, PLUGIN, fl.default_flows())
        if created:
            logger.info("created %s with patch ports %s/%s and VXLAN port %s (UDP %d)", fl.BRIDGE, fl.PATCH_EXT,
                        fl.PATCH_INT, fl.VXLAN_PORT, self.settings.vxlan_port)

    def wanted_ports(self) -> list[tuple[str, str, str, dict[str, str], dict[str, str]]]:
        """(bridge, port, type, options, external_ids) of every port the plugin keeps."""
        return [
            (fl.BRIDGE, fl.PATCH_EXT, "patch", {"peer": fl.PATCH_INT}, {}),
            (INTEGRATION_BRIDGE, fl.PATCH_INT, "patch", {"peer": fl.PATCH_EXT},
             {"iface-id": port_name(self.ctx.node_name)}),
            (fl.BRIDGE, fl.VXLAN_PORT, "vxlan",
             {"remote_ip": "flow", "key": "flow", "dst_port": str(self.settings.vxlan_port)}, {}),
        ]

    def ensure_ports(self) -> None:
        """Create or fix the ports; reads the local database first and writes only what differs."""
        for bridge, port, kind, options, external_ids in self.wanted_ports():
            current = self.ctx.ovs.interface(port)
            if (current is not None and current.bridge == bridge and current.type == kind
                    and all(current.external_ids.get(k) == v for k, v in external_ids.items())
                    and dict(current.options) == options):
                continue
            self.ctx.ovs.ensure_port(bridge, port, iface_type=kind, options=options, external_ids=external_ids,
                                     owner=PLUGIN if bridge == INTEGRATION_BRIDGE else None)
            logger.info("%s port %s on %s", "fixed" if current is not None else "created", port, bridge)

    # -- the node controller ------------------------------------------------------------------

    def spec(self) -> ControllerSpec:
        to_key = lambda _obj: [KEY]  # noqa: E731
        pods_changed = _annotations_changed(ann.POD_NETWORKS)
        own_changed = _annotations_changed(models.DR_IP, models.DR_MAC, ann.NODE_SUBNETS, ann.NODE_ID)
        return ControllerSpec(
            name=CONTROLLER, reconcile=self.reconcile, workers=1, resync_period=RESYNC,
            initial_keys=lambda: [KEY],
            watches=(
                Watch(NODES, label_selector=self.settings.node_selector, keys=to_key, needs_update=_foreign_changed),
                Watch(NODES, field_selector=self.node_selector, keys=to_key, needs_update=own_changed),
                Watch(PODS, field_selector=self.pod_selector, keys=to_key, needs_update=pods_changed),
            ))

    def reconcile(self, req: ReconcileRequest) -> None:
        self.ensure_ports()
        own = self.ctx.cache(NODES, field_selector=self.node_selector).get(self.ctx.node_name)
        facts = self._local_facts(own) if own is not None else None
        if facts is None:
            # Not set up by the controller yet (or the plugin is on in the agent only): nothing to forward.
            changed = self.ctx.flows.set_flows(fl.BRIDGE, PLUGIN, fl.default_flows())
            remotes: list[fl.Remote] = []
        else:
            changed = self.ctx.flows.set_flows(fl.BRIDGE, PLUGIN, fl.local_flows(facts, self._local_pods()))
            remotes = self._remotes()
        owners = set()
        for remote in remotes:
            assert facts is not None
            owner = remote_owner(remote.name)
            owners.add(owner)
            changed |= self.ctx.flows.set_flows(fl.BRIDGE, owner, fl.remote_flows(remote, dr_ip=facts.dr_ip,
                                                                                gr_join_ip=facts.gr_join_ip))
        for owner in sorted(self._remote_owners - owners):
            changed |= self.ctx.flows.set_flows(fl.BRIDGE, owner, [])
        if changed:
            self.ctx.flows.sync(fl.BRIDGE)
            logger.info("%s: flows for %d foreign node(s): %s", fl.BRIDGE, len(remotes),
                        ", ".join(r.name for r in remotes) or "-")
        self._remote_owners = owners
        routes = self._routes(facts, remotes) if facts is not None else []
        if self.ctx.net.set_routes(PLUGIN, routes):
            logger.info("routes to the hybrid subnets: %s", ", ".join(str(r) for r in routes) or "none")
        if self.metrics is not None:
            self.metrics.tunnels.set(len(remotes))
            self.metrics.flows.set(sum(len(self.ctx.flows.flows_of(fl.BRIDGE, o)) for o in {PLUGIN, *owners}))

    def _local_facts(self, own: Mapping[str, Any]) -> fl.LocalFacts | None:
        try:
            router = models.distributed_router(own)
            subnets = [s for s in ann.node_subnets(own) if isinstance(s, ipaddress.IPv4Network)]
            node_id = ann.node_id(own)
        except (HybridOverlayError, ann.AnnotationError) as exc:
            self._log_once("local", str(exc))
            return None
        if router is None or not subnets or router.ip not in subnets[0]:
            return None
        subnet = subnets[0]
        mgmt_ip = names.mgmt_ip(subnet)
        gateway_ip = names.gateway_ip(subnet)
        assert isinstance(mgmt_ip, ipaddress.IPv4Address)
        gr_join = names.join_ip(self.ctx.config.gateway.v4_join_subnet, node_id) if node_id is not None else None
        return fl.LocalFacts(subnet=subnet, dr_ip=router.ip, dr_mac=router.mac, mgmt_ip=mgmt_ip,
                             mgmt_mac=names.mac_from_ip(mgmt_ip), gateway_mac=names.mac_from_ip(gateway_ip),
                             gr_join_ip=gr_join)

    def _local_pods(self) -> list[fl.LocalPod]:
        pods = []
        for pod in self.ctx.cache(PODS, field_selector=self.pod_selector).list():
            if (pod.get("spec") or {}).get("hostNetwork") or (pod.get("status") or {}).get("phase") in (
                    "Succeeded", "Failed"):
                continue
            try:
                network = ann.pod_network(pod)
            except ann.AnnotationError:
                continue  # core reports it
            if network is None:
                continue
            for iface in network.ip_addresses:
                if isinstance(iface.ip, ipaddress.IPv4Address):
                    pods.append(fl.LocalPod(ip=iface.ip, mac=network.mac_address))
        return pods

    def _remotes(self) -> list[fl.Remote]:
        remotes = []
        for node in self.ctx.cache(NODES, label_selector=self.settings.node_selector).list():
            name = node["metadata"]["name"]
            try:
                found = models.foreign_node(node)
            except HybridOverlayError as exc:
                self._log_once(name, str(exc))
                continue
            if found.subnet is None or found.address is None or found.dr_mac is None:
                continue  # not announced yet: no tunnel until it is
            remotes.append(fl.Remote(name=name, subnet=found.subnet, address=found.address, dr_mac=found.dr_mac))
        return sorted(remotes, key=lambda r: r.name)

    def _routes(self, facts: fl.LocalFacts, remotes: list[fl.Remote]) -> list[TableRoute]:
        if self.settings.cluster_subnets:
            destinations = [r.network for r in self.settings.cluster_subnets]
        else:
            destinations = sorted({r.subnet for r in remotes})
        dev = self.ctx.config.node.mgmt_port
        return [TableRoute(dst=dst, table=MAIN_TABLE, dev=dev, gateway=facts.dr_ip) for dst in destinations]

    def _log_once(self, what: str, message: str) -> None:
        if (what, message) not in self._broken:
            self._broken.add((what, message))
            logger.warning("hybrid overlay: %s", message)
