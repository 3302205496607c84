"""The end-to-end health probe of the OVN control plane: ``e2e_timestamp``.

Like ovn-kubernetes, the leading controller writes the current time to
``NB_Global options:e2e_timestamp`` every ``[controller] e2e-timestamp-interval``
seconds; ovn-northd copies NB_Global's options to ``SB_Global``, so the value
read back from the Southbound database shows how fresh the whole NB -> northd
-> SB path is (``time() - ovnkube_controller_sb_e2e_timestamp`` is the lag an
alert fires on). Writing one option key of the singleton NB_Global row is the
one write ovnk makes to a row it does not own; it never deletes anything there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ovnk.core.metrics import ControllerMetrics
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.txn import TxnManager

logger = logging.getLogger(__name__)

E2E_KEY = "e2e_timestamp"


def read_global_option(client: OvsdbClient | None, table: str, key: str) -> float:
    """``options:<key>`` of the singleton ``table`` row as a number; 0 when absent, unparsable or disconnected."""
    if client is None:
        return 0.0
    try:
        with client.locked() as idl:
            rows = list(idl.tables[table].rows.values()) if table in idl.tables else []
            value = rows[0].options.get(key) if rows else None
    except RuntimeError:  # not started or already stopped
        return 0.0
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


class E2eTimestampProbe:
    """Writes the timestamp (a leader-only periodic task) and reads it back for the metrics."""

    def __init__(self, *, nb: OvsdbClient, sb: OvsdbClient | None, txns: TxnManager, metrics: ControllerMetrics) -> None:
        self.nb = nb
        self.sb = sb
        self.txns = txns
        self.metrics = metrics
        metrics.sb_e2e_timestamp.set_function(self.sb_value)

    def sb_value(self) -> float:
        return read_global_option(self.sb, "SB_Global", E2E_KEY)

    def nb_value(self) -> float:
        return read_global_option(self.nb, "NB_Global", E2E_KEY)

    def run(self) -> None:
        """One round: write now, then record what NB and SB hold."""
        now = int(time.time())
        try:
            self._write(now)
            self.metrics.nb_e2e_timestamp.set(now)
        except Exception as exc:
            # A failed write is what the metric is for: 0 makes "NB not writable" visible.
            logger.warning("cannot write the e2e timestamp to NB_Global: %s", exc)
            self.metrics.nb_e2e_timestamp.set(0)
        self.metrics.db_e2e_timestamp.labels(db_name="OVN_Northbound").set(self.nb_value())
        self.metrics.db_e2e_timestamp.labels(db_name="OVN_Southbound").set(self.sb_value())

    def _write(self, now: int) -> None:
        with self.nb.locked() as idl:
            rows = list(idl.tables["NB_Global"].rows.values())
            uuid: Any = rows[0].uuid if rows else None
        if uuid is None:
            raise RuntimeError("NB has no NB_Global row (is ovn-northd's database initialised?)")
        with self.txns.transaction(reason="e2e timestamp", owner="Cluster") as txn:
            txn.add(self.nb.api.db_set("NB_Global", uuid, ("options", {E2E_KEY: str(now)})))
