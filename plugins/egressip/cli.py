"""``ovnk egressip status``: which egress IP is on which node, and why an IP is on none."""

from __future__ import annotations

import json
from typing import Any

import click

from ovnk import EVENTS
from ovnk import NODES
from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.egressip.assignment import assign
from ovnk.plugins.egressip.models import EgressIPError
from ovnk.plugins.egressip.models import egress_node
from ovnk.plugins.egressip.models import parse_egressip
from ovnk.plugins.egressip.selection import EGRESSIPS

REASONS = ("NoMatchingNodeFound", "EgressIPConflict", "InvalidEgressIP")


def status_rows(kube: KubeClient) -> list[dict[str, Any]]:
    """One row per requested egress IP: object, IP, node (or None) and, for an unassigned IP, why."""
    objects, _ = kube.list(EGRESSIPS)
    nodes, _ = kube.list(NODES)
    events, _ = kube.list(EVENTS, field_selector="involvedObject.kind=EgressIP")
    latest: dict[tuple[str, str], str] = {}
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        if event.get("reason") in REASONS:
            latest[(event["involvedObject"]["name"], event["reason"])] = event.get("message", "")
    models = []
    rows: list[dict[str, Any]] = []
    for obj in objects:
        try:
            models.append(parse_egressip(obj))
        except EgressIPError as exc:
            rows.append({"egressip": obj["metadata"]["name"], "ip": None, "node": None, "reason": str(exc)})
    # What the controller would decide with every node reachable: a fallback reason for unassigned IPs.
    predicted = assign(models, [egress_node(n) for n in nodes])
    for model in sorted(models, key=lambda m: m.name):
        held = {ip: node for ip, node in model.status}
        for ip in model.ips:
            row: dict[str, Any] = {"egressip": model.name, "ip": str(ip), "node": held.get(ip), "reason": ""}
            if row["node"] is None:
                reported = [m for (name, _), m in latest.items() if name == model.name and str(ip) in m]
                row["reason"] = reported[-1] if reported else predicted[model.name].unassigned.get(
                    ip, "not assigned yet (is the egressip plugin enabled in the controller?)")
            rows.append(row)
    return rows


@click.group("egressip")
def egressip_group() -> None:
    """EgressIP: stable source addresses for selected pods."""


@egressip_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Each egress IP with the node holding it, or why no node does."""
    with KubeClient.from_settings(command_config().kubernetes) as kube:
        rows = status_rows(kube)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no EgressIP objects")
        return
    width = max(len(r["egressip"]) for r in rows)
    for row in rows:
        where = f"on {row['node']}" if row["node"] else f"unassigned: {row['reason']}"
        click.echo(f"{row['egressip']:<{width}}  {row['ip'] or '-':<15}  {where}")
