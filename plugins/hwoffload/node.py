"""hwoffload on the node agent: preconditions, the OVS offload keys, and the offload report.

* At start (``ovnk_node_setup``) the agent refuses to run the plugin, naming it, when the
  node cannot offload: no switchdev PF with VFs under ``[hwoffload] sysfs-root``, or an
  ovs-vswitchd older than 2.13. Otherwise it sets ``other_config:hw-offload=true`` and
  ``tc-policy`` (owner ``hwoffload``: the agent removes both when the plugin is switched off).
  ovs-vswitchd reads ``hw-offload`` when it starts: a node where it was off needs a restart
  of ovs-vswitchd once (as upstream documents).
* A node controller (``hwoffload``, one key) re-asserts the keys when the database changes
  or every 30 s, and recomputes the report (:mod:`ovnk.plugins.hwoffload.status`): the
  metrics, a log line when it changes, and the node annotation ``k8s.ovn.org/hw-offload``.
"""

from __future__ import annotations

import logging
import threading

from ovnk import ControllerSpec
from ovnk import NodeContext
from ovnk import ReconcileRequest
from ovnk import StartupError
from ovnk.plugins.hwoffload.metrics import TC_POLICIES
from ovnk.plugins.hwoffload.metrics import HwOffloadMetrics
from ovnk.plugins.hwoffload.settings import HwOffloadSettings
from ovnk.plugins.hwoffload.status import OffloadStatus
from ovnk.plugins.hwoffload.status import offload_keys
from ovnk.plugins.hwoffload.status import offload_status
from ovnk.plugins.hwoffload.status import ovs_problem
from ovnk.plugins.hwoffload.status import pf_problem
from ovnk.plugins.hwoffload.sysfs import Sysfs

logger = logging.getLogger(__name__)

OWNER = "hwoffload"
CONTROLLER = "hwoffload"
KEY = "offload"


def setup(ctx: NodeContext, settings: HwOffloadSettings) -> None:
    """Check the preconditions (``StartupError`` naming the plugin) and set the offload keys."""
    pfs = Sysfs(settings.sysfs_root).physical_functions()
    problem = pf_problem(pfs, settings.sysfs_root) or ovs_problem(ctx.ovs.ovs_version(), ctx.ovs.datapath_types())
    if problem:
        raise StartupError(f"hwoffload cannot run on node {ctx.node_name}: {problem}")
    if ctx.ovs.set_owned_keys(OWNER, "other_config", offload_keys(settings.tc_policy)):
        logger.info("set Open_vSwitch other_config hw-offload=true tc-policy=%s (ovs-vswitchd applies hw-offload "
                    "when it starts)", settings.tc_policy)


class OffloadReporter:
    """The node controller keeping the offload keys and the report (see the module docstring)."""

    def __init__(self, ctx: NodeContext, settings: HwOffloadSettings, metrics: HwOffloadMetrics | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.metrics = metrics
        self.sysfs = Sysfs(settings.sysfs_root)
        self._lock = threading.Lock()
        self._last: OffloadStatus | None = None

    def spec(self) -> ControllerSpec:
        self.ctx.ovs.subscribe(self._ovs_changed)
        return ControllerSpec(name=CONTROLLER, watches=(), workers=1, reconcile=self.reconcile, resync_period=30.0,
                              initial_keys=lambda: [KEY])

    def _ovs_changed(self) -> None:
        try:
            self.ctx.enqueue(CONTROLLER, KEY)
        except KeyError:
            pass  # the controller is not running yet; its initial key covers this change

    def status(self) -> OffloadStatus:
        pfs = self.sysfs.physical_functions()
        free = in_use = 0
        for pf in pfs:
            if not pf.switchdev:
                continue
            for vf in self.sysfs.virtual_functions(pf):
                if vf.netdev is not None and self.ctx.net.link(vf.netdev) is not None:
                    free += 1
                else:
                    in_use += 1
        return offload_status(other_config=self.ctx.ovs.other_config(),
                              datapath=self.ctx.config.ovs.datapath_type, pfs=pfs, vfs_free=free,
                              vfs_in_use=in_use)

    def reconcile(self, req: ReconcileRequest) -> None:
        self.ctx.ovs.set_owned_keys(OWNER, "other_config", offload_keys(self.settings.tc_policy))
        status = self.status()
        with self._lock:
            changed, self._last = status != self._last, status
        if changed:
            logger.info("hardware offload on %s: %s (enabled=%s, datapath %s, PFs %s, VFs free %d, in use %d)",
                        self.ctx.node_name, "active" if status.active else "not active: " + status.reason,
                        status.enabled, status.datapath, ", ".join(status.pfs) or "-", status.vfs_free,
                        status.vfs_in_use)
        if self.metrics is not None:
            self.metrics.enabled.set(1 if status.enabled else 0)
            self.metrics.active.set(1 if status.active else 0)
            for policy in TC_POLICIES:
                self.metrics.tc_policy.labels(policy=policy).set(1 if status.tc_policy == policy else 0)
            self.metrics.vfs.labels(state="free").set(status.vfs_free)
            self.metrics.vfs.labels(state="in_use").set(status.vfs_in_use)
