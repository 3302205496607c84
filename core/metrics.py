"""Prometheus registry factory and core metric definitions.

Every process creates its own :class:`prometheus_client.CollectorRegistry`
(never the library's global one) and passes it to ``ovnk_register_metrics``.
Names follow ``ovnk_<subsystem>_<name>_<unit>``; labels come from a small
fixed set (``controller``, ``plugin``, ``owner``, ``result``, ``command``).
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge

import ovnk


def new_registry(*, component: str) -> CollectorRegistry:
    """A fresh registry carrying ``ovnk_build_info{version, python, component} 1``."""
    registry = CollectorRegistry(auto_describe=True)
    info = Gauge(
        "ovnk_build_info",
        "Build information of this ovnk process (always 1).",
        ["version", "python", "component"],
        registry=registry,
    )
    info.labels(version=ovnk.__version__, python=platform.python_version(), component=component).set(1)
    return registry
