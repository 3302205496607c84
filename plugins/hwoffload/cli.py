"""``ovnk hwoffload status``: per node, whether hardware offload is active, why not, and its VFs."""

from __future__ import annotations

import json
from typing import Any

import click

from ovnk import NODES
from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.hwoffload.status import ANNOTATION


def status_rows(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per node that publishes the offload report (nodes the plugin does not serve have none)."""
    rows = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        raw = (node["metadata"].get("annotations") or {}).get(ANNOTATION)
        if not raw:
            continue
        try:
            report = json.loads(raw)
        except ValueError:
            report = {"reason": f"unreadable {ANNOTATION}: {raw!r}"}
        rows.append({"node": node["metadata"]["name"], **report})
    return rows


def format_row(row: dict[str, Any], width: int) -> str:
    state = "active" if row.get("active") else "not active"
    vfs = row.get("vfs") or {}
    return (f"{row['node']:<{width}}  {state:<10}  PFs {','.join(row.get('pfs') or []) or '-'}  "
            f"VFs free {vfs.get('free', '?')} in use {vfs.get('in-use', '?')}  tc-policy {row.get('tc-policy', '?')}"
            f"  ({row.get('reason', '')})")


@click.group("hwoffload")
def hwoffload_group() -> None:
    """Hardware offload: SR-IOV VF pods and OVS hw-offload."""


@hwoffload_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Each node's offload report (k8s.ovn.org/hw-offload)."""
    with KubeClient.from_settings(command_config().kubernetes) as kube:
        nodes, _ = kube.list(NODES)
    rows = status_rows(nodes)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no node reports hardware offload (is the hwoffload plugin enabled on the node agents?)")
        return
    width = max(len(r["node"]) for r in rows)
    for row in rows:
        click.echo(format_row(row, width))
