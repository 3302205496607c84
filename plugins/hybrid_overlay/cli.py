"""``ovnk hybrid-overlay status``: the foreign nodes and what tunnels to them still lack; the OVN nodes' DRs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import click

import ovnk.annotations as ann
from ovnk import NODES
from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay.models import HybridOverlayError
from ovnk.plugins.hybrid_overlay.settings import HybridOverlaySettings


def node_rows(nodes: Sequence[Mapping[str, Any]], *, selector: str) -> list[dict[str, Any]]:
    """One row per node: role (foreign / ovn), its hybrid overlay facts, and what is missing."""
    parsed = models.parse_node_selector(selector)
    rows: list[dict[str, Any]] = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        if parsed.matches_object(node):
            row: dict[str, Any] = {"node": name, "role": "foreign", "subnet": None, "address": None, "mac": None,
                                   "missing": []}
            try:
                found = models.foreign_node(node)
            except HybridOverlayError as exc:
                row["missing"].append(str(exc))
                rows.append(row)
                continue
            row.update(subnet=str(found.subnet) if found.subnet else None,
                       address=str(found.address) if found.address else None, mac=found.dr_mac)
            if found.subnet is None:
                row["missing"].append(f"{models.NODE_SUBNET} (is the controller allocating? cluster-subnets)")
            if found.address is None:
                row["missing"].append("an InternalIP address")
            if found.dr_mac is None:
                row["missing"].append(f"{models.DR_MAC} (set by the node itself)")
        else:
            row = {"node": name, "role": "ovn", "subnet": None, "address": None, "mac": None, "missing": []}
            try:
                router = models.distributed_router(node)
                subnets = ann.node_subnets(node)
            except (HybridOverlayError, ann.AnnotationError) as exc:
                row["missing"].append(str(exc))
                rows.append(row)
                continue
            row["subnet"] = ", ".join(str(s) for s in subnets) or None
            if router is None:
                row["missing"].append(f"{models.DR_IP} and {models.DR_MAC} (is the plugin on in the controller?)")
            else:
                row.update(address=str(router.ip), mac=router.mac)
        rows.append(row)
    return rows


@click.group("hybrid-overlay")
def hybrid_overlay_group() -> None:
    """Hybrid overlay: OVN pods and foreign (Windows) nodes' pods over VXLAN."""


@hybrid_overlay_group.command("status")
@click.option("--node-selector", default=None,
              help="Foreign nodes' label selector (default: [hybrid_overlay] node-selector).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(node_selector: str | None, as_json: bool) -> None:
    """Foreign nodes (subnet, VXLAN endpoint, MAC, what is missing) and the OVN nodes' distributed routers."""
    config = command_config()
    settings = config.plugin_settings("hybrid_overlay") if "hybrid_overlay" in config.plugin_sections \
        else HybridOverlaySettings()
    with KubeClient.from_settings(config.kubernetes) as kube:
        nodes, _ = kube.list(NODES)
    rows = node_rows(nodes, selector=node_selector or settings.node_selector)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["node"]) for r in rows), default=4)
    for row in rows:
        state = "ready" if not row["missing"] else "missing " + "; ".join(row["missing"])
        label = "DR" if row["role"] == "ovn" else "VTEP"
        click.echo(f"{row['node']:<{width}}  {row['role']:<7}  subnet {row['subnet'] or '-':<18}  "
                   f"{label} {row['address'] or '-':<15} {row['mac'] or '-':<17}  {state}")
