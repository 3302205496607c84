"""Entry-point module of the hwoffload plugin: settings, claims, metrics, and its runtime.

The plugin is node-side only: ``ovnk_configure`` registers :class:`HwOffloadPlugin`, whose
methods are the node-agent and CNI hooks (the stateful-plugin pattern, see docs/hooks.md).
The controller has nothing to do for it: a VF pod's logical switch port is the same as a
veth pod's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from ovnk import hookimpl
from ovnk.plugins.hwoffload.settings import HwOffloadSettings
from ovnk.plugins.hwoffload.status import ANNOTATION

if TYPE_CHECKING:
    import click
    from prometheus_client import CollectorRegistry

    from ovnk import Claims
    from ovnk import CniNetwork
    from ovnk import CniRequest
    from ovnk import Config
    from ovnk import ControllerSpec
    from ovnk import InterfaceDriver
    from ovnk import NodeContext
    from ovnk import PluginManager
    from ovnk import SettingsRegistry
    from ovnk.plugins.hwoffload.driver import VfLocks
    from ovnk.plugins.hwoffload.metrics import HwOffloadMetrics
    from ovnk.plugins.hwoffload.node import OffloadReporter

NAME = "hwoffload"

logger = logging.getLogger(__name__)


@hookimpl
def ovnk_add_settings(settings: SettingsRegistry) -> None:
    settings.add(NAME, HwOffloadSettings)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    claims.annotation(ANNOTATION)


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk.plugins.hwoffload.cli import hwoffload_group

    cli.add_command(hwoffload_group)


@hookimpl
def ovnk_configure(config: Config, pluginmanager: PluginManager) -> None:
    pluginmanager.register_runtime(NAME, HwOffloadPlugin(config.plugin_settings(NAME)))


class HwOffloadPlugin:
    """The runtime half: node set-up, the offload reporter, and the VF driver for CNI requests."""

    def __init__(self, settings: HwOffloadSettings) -> None:
        self.settings = settings
        self.metrics: HwOffloadMetrics | None = None
        self.reporter: OffloadReporter | None = None
        self._locks: VfLocks | None = None
        self._locks_guard = threading.Lock()
        self._selected: bool | None = None

    def selected(self, ctx: NodeContext) -> bool:
        """Whether this node's labels (read once, at agent start) match ``node-selector``."""
        if self._selected is None:
            from ovnk import NODES
            from ovnk.plugins.hwoffload.settings import selects

            node = ctx.kube.get(NODES, ctx.node_name) or {}
            labels = dict((node.get("metadata") or {}).get("labels") or {})
            self._selected = selects(self.settings.node_selector, labels)
            if not self._selected:
                logger.info("hwoffload: node %s does not match node-selector %r: the plugin does nothing here",
                            ctx.node_name, self.settings.node_selector)
        return self._selected

    @hookimpl
    def ovnk_register_metrics(self, registry: CollectorRegistry) -> None:
        from ovnk.plugins.hwoffload.metrics import HwOffloadMetrics

        self.metrics = HwOffloadMetrics.create(registry)

    # -- node agent ----------------------------------------------------------------------

    @hookimpl
    def ovnk_node_setup(self, ctx: NodeContext) -> None:
        from ovnk.plugins.hwoffload.node import OWNER
        from ovnk.plugins.hwoffload.node import setup

        if self.selected(ctx):
            setup(ctx, self.settings)
        else:
            ctx.ovs.set_owned_keys(OWNER, "other_config", {})  # selected before, maybe

    @hookimpl
    def ovnk_node_management_port(self, ctx: NodeContext, name: str, iface_id: str, mtu: int) -> bool | None:
        from ovnk.plugins.hwoffload.mgmt import provide

        return provide(ctx, self.settings, name=name, iface_id=iface_id, mtu=mtu, selected=self.selected(ctx))

    @hookimpl
    def ovnk_node_controllers(self, ctx: NodeContext) -> list[ControllerSpec]:
        from ovnk.plugins.hwoffload.node import OffloadReporter

        if not self.selected(ctx):
            return []
        self.reporter = OffloadReporter(ctx, self.settings, self.metrics)
        return [self.reporter.spec()]

    @hookimpl
    def ovnk_node_annotations(self, ctx: NodeContext, annotations: MutableMapping[str, str | None]) -> None:
        from ovnk.plugins.hwoffload.node import OffloadReporter

        if not self.selected(ctx):
            annotations[ANNOTATION] = None
            return
        reporter = self.reporter or OffloadReporter(ctx, self.settings, self.metrics)
        annotations[ANNOTATION] = reporter.status().annotation()

    # -- CNI -------------------------------------------------------------------------------

    @hookimpl
    def ovnk_cni_interface_driver(self, ctx: NodeContext, request: CniRequest,
                                  network: CniNetwork) -> InterfaceDriver | None:
        from ovnk.plugins.hwoffload.driver import VfDriver
        from ovnk.plugins.hwoffload.driver import VfLocks
        from ovnk.plugins.hwoffload.selection import device_id_of
        from ovnk.plugins.hwoffload.sysfs import Sysfs

        if not self.selected(ctx):
            return None
        device_id = device_id_of(ctx, request, from_annotation=self.settings.device_id_annotation)
        if device_id is None:
            return None
        with self._locks_guard:
            if self._locks is None:
                self._locks = VfLocks()
        return VfDriver(Sysfs(self.settings.sysfs_root), device_id, locks=self._locks, metrics=self.metrics)
