"""Naming what a trace hit in Kubernetes terms, from the ``external_ids`` ovnk writes on every row.

Plugins name their own rows through the ``ovnk_trace_explain`` hook; a row no
plugin explains is still named from its ownership keys (owner type, object
name and the type's other keys), so a new feature's ACLs and policies show up
in a trace without any code of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk.core.ovn.ids import OBJECT_NAME_KEY
from ovnk.core.ovn.ids import OWNER_CONTROLLER_KEY
from ovnk.core.ovn.ids import OWNER_TYPE_KEY
from ovnk.core.ovn.ids import PRIMARY_ID_KEY
from ovnk.core.ovn.reader import RowSnapshot

#: What a row of each table does to the packet, for the generic text.
_TABLE_WORDS = {"ACL": "ACL", "Load_Balancer": "load balancer", "Logical_Router_Policy": "router policy",
                "NAT": "NAT", "Logical_Router_Static_Route": "static route"}


@dataclass(frozen=True)
class Finding:
    """One ovnk-owned NB row a step of the trace came from."""

    datapath: str
    pipeline: str  # "ingress" or "egress"
    stage: str
    table: str
    uuid: str
    owner_type: str | None
    owner: str | None  # k8s.ovn.org/name
    keys: Mapping[str, str]  # the other ownership keys (direction, gress-index, ...)
    action: str | None  # ACL / policy action, NAT type
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"datapath": self.datapath, "pipeline": self.pipeline, "stage": self.stage, "table": self.table,
                "uuid": self.uuid, "owner_type": self.owner_type, "owner": self.owner, "keys": dict(self.keys),
                "action": self.action, "text": self.text}


def ownership_keys(external_ids: Mapping[str, str]) -> dict[str, str]:
    """The identifying keys of a row other than controller, type, name and primary id."""
    skip = {OWNER_CONTROLLER_KEY, OWNER_TYPE_KEY, OBJECT_NAME_KEY, PRIMARY_ID_KEY}
    return {k: v for k, v in sorted(external_ids.items()) if k not in skip}


def generic_text(table: str, external_ids: Mapping[str, str], columns: Mapping[str, Any]) -> str:
    """``<owner-type> <name> (<keys>): <table> <action>`` for a row no plugin explains."""
    owner_type = external_ids.get(OWNER_TYPE_KEY)
    what = _TABLE_WORDS.get(table, table)
    action = columns.get("action") or columns.get("type")
    if owner_type is None:
        return f"{what} not written by ovnk" + (f" ({action})" if action else "")
    keys = ", ".join(f"{k.removeprefix('k8s.ovn.org/')}={v}" for k, v in ownership_keys(external_ids).items())
    name = external_ids.get(OBJECT_NAME_KEY, "")
    return f"{owner_type} {name}".strip() + (f" ({keys})" if keys else "") + f": {what}" + (f" {action}" if action else "")


def row_action(row: RowSnapshot) -> str | None:
    value = row.columns.get("action") or row.columns.get("type")
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def explain(row: RowSnapshot, *, hook: Any, datapath: str, pipeline: str, stage: str) -> Finding:
    """A :class:`Finding` for ``row``: the first plugin's text (``ovnk_trace_explain``) or the generic one."""
    text = None
    if hook is not None:
        text = hook.ovnk_trace_explain(table=row.table, external_ids=dict(row.external_ids), columns=dict(row.columns))
    if not text:
        text = generic_text(row.table, row.external_ids, row.columns)
    return Finding(datapath=datapath, pipeline=pipeline, stage=stage, table=row.table, uuid=row.uuid,
                   owner_type=row.external_ids.get(OWNER_TYPE_KEY), owner=row.external_ids.get(OBJECT_NAME_KEY),
                   keys=ownership_keys(row.external_ids), action=row_action(row), text=text)
