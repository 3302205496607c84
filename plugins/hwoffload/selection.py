"""Which CNI requests the VF driver serves: the ``deviceID`` of a request.

In order:

1. the netconf's ``deviceID`` (what Multus passes from the SR-IOV device plugin's
   allocation, on ADD, CHECK and DEL);
2. for a request without one, the VF this container was wired to, as recorded on its OVS
   port (``k8s.ovn.org/vf-pci-address``): a DEL or CHECK from a runtime that does not repeat
   the deviceID still returns the VF;
3. with ``[hwoffload] device-id-annotation`` on, the pod's annotation
   ``k8s.ovn.org/hwoffload-device-id``, for clusters without Multus (the lab's sandbox).

``None`` leaves the request to the next driver (core's veth driver).
"""

from __future__ import annotations

import logging

from ovnk import PODS
from ovnk import CniRequest
from ovnk import NodeContext
from ovnk import OvnkError

logger = logging.getLogger(__name__)

DEVICE_ANNOTATION = "k8s.ovn.org/hwoffload-device-id"
#: Interface external_ids key of a wired VF's PCI address (the driver writes it).
VF_PCI = "k8s.ovn.org/vf-pci-address"


def recorded_device(ctx: NodeContext, request: CniRequest) -> str | None:
    for iface in ctx.ovs.interfaces(lambda i: i.external_ids.get("sandbox") == request.container_id
                                    and VF_PCI in i.external_ids):
        if iface.external_ids.get("pod-if-name", request.ifname) == request.ifname:
            return iface.external_ids[VF_PCI]
    return None


def annotated_device(ctx: NodeContext, request: CniRequest) -> str | None:
    namespace, name = request.pod_namespace, request.pod_name
    if not namespace or not name:
        return None
    pods = ctx.cache(PODS, field_selector=f"spec.nodeName={ctx.node_name}")
    pod = pods.get(f"{namespace}/{name}")
    if pod is None:
        try:
            pod = ctx.kube.get(PODS, name, namespace=namespace)
        except OvnkError:
            logger.warning("pod %s/%s: cannot read its %s annotation", namespace, name, DEVICE_ANNOTATION,
                           exc_info=True)
            return None
    value = ((pod or {}).get("metadata", {}).get("annotations") or {}).get(DEVICE_ANNOTATION)
    return str(value).strip() or None if value else None


def device_id_of(ctx: NodeContext, request: CniRequest, *, from_annotation: bool) -> str | None:
    """The deviceID the request is for, or ``None`` (see the module docstring)."""
    if request.device_id:
        return request.device_id
    recorded = recorded_device(ctx, request)
    if recorded:
        return recorded
    if from_annotation and request.command in ("ADD", "CHECK"):
        return annotated_device(ctx, request)
    return None
