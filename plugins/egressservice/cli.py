"""``ovnk egressservice status``: each EgressService, its host and ingress IPs, or why it has no host."""

from __future__ import annotations

import json
from typing import Any

import click

from ovnk import SERVICES
from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.egressservice.controller import CONDITION
from ovnk.plugins.egressservice.controller import EGRESSSERVICES
from ovnk.plugins.egressservice.models import parse_ingress_ips


def status_rows(kube: KubeClient) -> list[dict[str, Any]]:
    """One row per EgressService: key, sourceIPBy, host, ingress IPs and the reason from its condition."""
    objects, _ = kube.list(EGRESSSERVICES)
    services, _ = kube.list(SERVICES)
    by_key = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in services}
    rows = []
    for obj in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        status = obj.get("status") or {}
        condition: dict[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == CONDITION), {})
        service = by_key.get(key)
        rows.append({"egressservice": key, "sourceIPBy": (obj.get("spec") or {}).get("sourceIPBy", ""),
                     "host": status.get("host") or None,
                     "ingressIPs": [str(ip) for ip in parse_ingress_ips(service)] if service else [],
                     "reason": "" if status.get("host") else (condition.get("message")
                                                              or "not handled yet (is the plugin enabled?)")})
    return rows


@click.group("egressservice")
def egressservice_group() -> None:
    """EgressService: a LoadBalancer Service's ingress IP as its endpoints' source address."""


@egressservice_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Each EgressService with its host node, or why it has none."""
    with KubeClient.from_settings(command_config().kubernetes) as kube:
        rows = status_rows(kube)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no EgressService objects")
        return
    width = max(len(r["egressservice"]) for r in rows)
    for row in rows:
        where = f"host {row['host']}" if row["host"] else f"no host: {row['reason']}"
        click.echo(f"{row['egressservice']:<{width}}  {','.join(row['ingressIPs']) or '-':<15}  {where}")
