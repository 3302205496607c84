"""``ovnk egressfirewall status``: each namespace's EgressFirewall, whether its rules are applied, and why not."""

from __future__ import annotations

import json
from typing import Any

import click

from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.egressfirewall.models import EgressFirewallError
from ovnk.plugins.egressfirewall.models import parse_egress_firewall
from ovnk.plugins.egressfirewall.selection import EGRESSFIREWALLS


def status_rows(kube: KubeClient) -> list[dict[str, Any]]:
    """One row per EgressFirewall: namespace, name, rules, DNS names, the status the controller wrote
    (None: not written yet) and its messages, plus what this command finds wrong in the object itself."""
    objects, _ = kube.list(EGRESSFIREWALLS)
    rows = []
    for obj in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        meta, status = obj["metadata"], obj.get("status") or {}
        row: dict[str, Any] = {"namespace": meta["namespace"], "name": meta["name"],
                               "rules": len((obj.get("spec") or {}).get("egress") or []), "dns_names": [],
                               "status": status.get("status"), "messages": list(status.get("messages") or []),
                               "problem": ""}
        try:
            row["dns_names"] = sorted(parse_egress_firewall(obj).dns_names)
        except EgressFirewallError as exc:
            row["problem"] = str(exc)
        rows.append(row)
    return rows


@click.group("egressfirewall")
def egressfirewall_group() -> None:
    """EgressFirewall: per-namespace allow/deny rules for traffic leaving the cluster."""


@egressfirewall_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Each EgressFirewall with its rule count and status; the messages of those not applied cleanly."""
    with KubeClient.from_settings(command_config().kubernetes) as kube:
        rows = status_rows(kube)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no EgressFirewall objects")
        return
    width = max(len(f"{r['namespace']}/{r['name']}") for r in rows)
    for row in rows:
        state = row["status"] or "no status yet (is the egressfirewall plugin enabled in the controller?)"
        click.echo(f"{row['namespace'] + '/' + row['name']:<{width}}  {row['rules']:>5} rules  {state}")
        details = [m for m in row["messages"] if not m.endswith(": EgressFirewall Rules applied")]
        if row["problem"] and not any(row["problem"] in m for m in details):
            details.append(row["problem"])
        for line in details:
            click.echo(f"{'':<{width}}  {line}")
