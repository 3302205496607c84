"""The node side: physical networks for localnet, the CNI network of a NAD attachment, delegation.

* :func:`setup_bridges`: the ``bridge-mappings`` of the settings go into the
  node's ``ovn-bridge-mappings`` (owned keys: switched off, they go), and each
  ``bridge-uplinks`` bridge is created (owned by the plugin) with its uplink.
* :func:`cni_network`: a request whose netconf has ``netAttachDefName`` (what
  Multus passes: the NAD's config) is a secondary attachment: annotation key
  ``<ns>/<nad>`` (``/<n>`` for the n-th repeat, matched by interface name),
  iface-id ``<nad prefix><ns>_<pod>``, host end ``<containerID>_<ifname>``.
* :func:`delegate_add` / :func:`delegate_del` (``attachments = agent``): for
  clusters without Multus, the runtime's request for the default network also
  performs each attachment of the pod's ``k8s.v1.cni.cncf.io/networks``
  through core's CNI path (``ctx.cni``), with the NAD's config as Multus would
  pass it, and writes ``k8s.v1.cni.cncf.io/network-status`` as Multus does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ovnk import PODS
from ovnk import CniError
from ovnk import CniNetwork
from ovnk import CniRequest
from ovnk import CniResult
from ovnk import NodeContext
from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks.controller import NADS
from ovnk.plugins.secondary_networks.settings import SecondaryNetworksSettings

logger = logging.getLogger(__name__)

OWNER = "secondary_networks"
# CNI error codes (the CNI spec's well-known ones; 100+ are ovnk's own, see ovnk.cni.types).
ERR_INVALID_NETWORK_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11


def setup_bridges(ctx: NodeContext, settings: SecondaryNetworksSettings) -> None:
    """Bridges with uplinks, then the bridge mappings (idempotent; runs at every agent start)."""
    for bridge, uplink in settings.uplinks().items():
        ctx.ovs.ensure_bridge(bridge, datapath_type=ctx.config.ovs.datapath_type, owner=OWNER)
        ctx.ovs.ensure_port(bridge, uplink)
    ctx.ovs.set_bridge_mappings(OWNER, settings.mappings())


def is_attachment(request: CniRequest) -> bool:
    """Whether a request is for a NAD attachment (Multus passes the NAD's config, which names it)."""
    return request.plugin_type == models.OVN_CNI_TYPE and bool(request.config.get("netAttachDefName"))


def _spec(request: CniRequest) -> models.NetworkSpec:
    nad_name = str(request.config.get("netAttachDefName") or "")
    try:
        spec = models.parse_config(request.config, nad_name)
    except models.NetworkError as exc:
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"NetworkAttachmentDefinition {nad_name}: {exc}") from None
    assert spec is not None
    return spec


def _occurrence(ctx: NodeContext, request: CniRequest, nad_name: str) -> int:
    """Which repeat of NAD ``nad_name`` in the pod's selections this interface is (0 for the first)."""
    if request.command != "ADD" or not request.pod_namespace or not request.pod_name:
        return 0
    pod = ctx.kube.get(PODS, request.pod_name, namespace=request.pod_namespace)
    if pod is None:
        return 0
    try:
        selections = models.parse_selections(pod)
    except models.SelectionError as exc:
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"pod {request.pod_key}: {exc}") from None
    for selection in selections:
        if selection.nad_name == nad_name and selection.ifname == request.ifname:
            return selection.occurrence
    return 0


def cni_network(ctx: NodeContext, request: CniRequest) -> CniNetwork | None:
    """The network of a NAD attachment request; ``None`` for every other request."""
    if not is_attachment(request):
        return None
    nad_name = str(request.config["netAttachDefName"])
    try:
        spec = _spec(request)
    except CniError:
        if request.command != "DEL":
            raise
        # DEL must succeed whatever the config says: tearing down needs only the names.
        spec = models.NetworkSpec(name=request.network_name, topology=models.LAYER2)
    nad_key = models.indexed_nad_key(nad_name, _occurrence(ctx, request, nad_name))
    iface_id = ""
    if request.pod_namespace and request.pod_name:
        iface_id = models.port_name(nad_key, request.pod_namespace, request.pod_name)
    return CniNetwork(
        annotation_key=nad_key, iface_id=iface_id, ifname=request.ifname,
        mtu=spec.interface_mtu(ctx.config.default.mtu), nad=nad_name,
        external_ids={models.NETWORK_KEY: spec.name, models.NAD_KEY: nad_key},
        host_ifname=models.host_ifname(request.container_id, request.ifname), ipam=spec.ipam)


# -- delegation (attachments = agent) -----------------------------------------------------------


def _env(request: CniRequest, command: str, ifname: str) -> dict[str, str]:
    args = ";".join(f"{k}={v}" for k, v in request.args.items())
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": request.container_id, "CNI_NETNS": request.netns,
            "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": ":".join(request.path)}


def _attachment_request(ctx: NodeContext, request: CniRequest, command: str,
                        selection: models.Selection) -> CniRequest:
    """The request Multus would make for one selection: the NAD's config, the selection's interface."""
    nad = ctx.kube.get(NADS, selection.name, namespace=selection.namespace)
    if nad is None:
        raise CniError(ERR_TRY_AGAIN_LATER, f"pod {request.pod_key}: NetworkAttachmentDefinition "
                                            f"{selection.nad_name} does not exist")
    try:
        config = models.nad_config(nad)
    except models.NetworkError as exc:
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"NetworkAttachmentDefinition {selection.nad_name}: "
                                                   f"{exc}") from None
    config.setdefault("cniVersion", request.cni_version)
    if config.get("type") != models.OVN_CNI_TYPE:
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"NetworkAttachmentDefinition {selection.nad_name} has type "
                                                   f"{config.get('type')!r}; without Multus only "
                                                   f"{models.OVN_CNI_TYPE} attachments can be performed")
    return CniRequest.parse(_env(request, command, selection.ifname), json.dumps(config))


def _status(name: str, ifname: str, result: CniResult, *, default: bool = False) -> models.InterfaceStatus:
    index = next((i for i, iface in enumerate(result.interfaces) if iface.sandbox and iface.name == ifname), None)
    mac = result.interfaces[index].mac if index is not None else ""
    ips = tuple(ip.address.ip for ip in result.ips if ip.interface in (index, None))
    gateways = tuple(ip.gateway for ip in result.ips if ip.gateway is not None) if default else ()
    return models.InterfaceStatus(name=name, interface=ifname, ips=ips, mac=mac, default=default,
                                  gateways=gateways)


def delegate_add(ctx: NodeContext, request: CniRequest, result: CniResult) -> None:
    """After the default network's ADD: each attachment of the pod, then ``network-status``.

    A failing attachment undoes those done before it and fails the whole ADD
    (core then removes the default interface too), as Multus does.
    """
    if is_attachment(request) or not request.pod_namespace or not request.pod_name:
        return
    pod = ctx.kube.get(PODS, request.pod_name, namespace=request.pod_namespace)
    if pod is None:
        return
    try:
        selections = models.parse_selections(pod)
    except models.SelectionError as exc:
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"pod {request.pod_key}: {exc}") from None
    if not selections:
        return
    statuses = [_status(request.network_name, request.ifname, result, default=True)]
    done: list[CniRequest] = []
    try:
        for selection in selections:
            sub = _attachment_request(ctx, request, "ADD", selection)
            sub_result = ctx.cni.add(sub)
            done.append(sub)
            statuses.append(_status(selection.nad_name, selection.ifname, sub_result))
    except BaseException:
        for sub in reversed(done):
            try:
                ctx.cni.delete(_with_command(sub, "DEL"))
            except Exception:
                logger.warning("pod %s: could not undo attachment %s", request.pod_key, sub.ifname, exc_info=True)
        raise
    ctx.kube.patch(PODS, request.pod_name, {"metadata": {"annotations": {
        models.NETWORK_STATUS_ANNOTATION: models.format_network_status(statuses)}}},
        namespace=request.pod_namespace, subresource="status")
    logger.info("pod %s: %d attachment(s) wired (%s)", request.pod_key, len(done),
                ", ".join(f"{s.ifname}={s.nad_key}" for s in selections))


def _with_command(request: CniRequest, command: str) -> CniRequest:
    return CniRequest.parse(_env(request, command, request.ifname), json.dumps(dict(request.config)))


def delegate_del(ctx: NodeContext, request: CniRequest) -> None:
    """After the default network's DEL: every attachment of the container still wired.

    The pod may be gone: the attachments are found in OVS (interfaces of this
    sandbox with a ``k8s.ovn.org/network``), and DEL needs only the interface names.
    """
    if is_attachment(request) or not request.container_id:
        return
    for iface in ctx.ovs.interfaces(lambda i: i.external_ids.get("sandbox") == request.container_id
                                    and models.NETWORK_KEY in i.external_ids):
        ids: Mapping[str, Any] = iface.external_ids
        nad_key = str(ids.get(models.NAD_KEY, ""))
        ifname = str(ids.get("pod-if-name", ""))
        network = str(ids.get(models.NETWORK_KEY, ""))
        if not nad_key or not ifname:
            continue
        config = {"cniVersion": request.cni_version, "name": network, "type": models.OVN_CNI_TYPE,
                  "netAttachDefName": models.nad_name_of(nad_key)}
        try:
            ctx.cni.delete(CniRequest.parse(_env(request, "DEL", ifname), json.dumps(config)))
        except CniError as exc:
            logger.warning("pod %s: DEL of attachment %s failed: %s", request.pod_key, ifname, exc)
