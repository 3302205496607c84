"""Helpers for interface drivers (``ovnk_cni_interface_driver``), public.

A driver wires one pod interface its own way (core's veth pair, an SR-IOV
VF and its representor) but answers the CNI runtime and OVN the same way:
the same result shape, the same OVS ``Interface`` ``external_ids`` (which
ovn-controller and core's CNI GC read) and the same CNI error codes. These
are core's, so a third-party driver stays in step with the veth driver.
"""

from __future__ import annotations

from ovnk.cni.types import ERR_INTERNAL
from ovnk.cni.types import ERR_INVALID_ENVIRONMENT
from ovnk.cni.types import ERR_INVALID_NETWORK_CONFIG
from ovnk.cni.types import ERR_IO_FAILURE
from ovnk.cni.types import ERR_UNKNOWN_CONTAINER
from ovnk.cni.types import ERR_WIRING_MISMATCH
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRoute
from ovnk.core.node.wiring import build_result
from ovnk.core.node.wiring import interface_external_ids
from ovnk.core.node.wiring import pod_routes

__all__ = [
    "ERR_INTERNAL",
    "ERR_INVALID_ENVIRONMENT",
    "ERR_INVALID_NETWORK_CONFIG",
    "ERR_IO_FAILURE",
    "ERR_UNKNOWN_CONTAINER",
    "ERR_WIRING_MISMATCH",
    "CniIPConfig",
    "CniInterface",
    "CniRoute",
    "build_result",
    "interface_external_ids",
    "pod_routes",
]
