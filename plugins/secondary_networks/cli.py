"""``ovnk networks``: the secondary networks the NADs define, their NADs, conflicts and attached pods."""

from __future__ import annotations

import json
from typing import Any

import click

from ovnk import PODS
from ovnk import KubeClient
from ovnk import command_config
from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks.controller import NADS
from ovnk.plugins.secondary_networks.controller import nad_info


def network_rows(kube: KubeClient) -> dict[str, Any]:
    """Networks (config, NADs, attached pods), and the NADs left out with why; as the controller groups them."""
    nads, _ = kube.list(NADS)
    pods, _ = kube.list(PODS)
    infos = [info for info in (nad_info(nad) for nad in nads) if info is not None]
    resolution = models.resolve_networks(infos)
    attached: dict[str, list[str]] = {}
    for pod in pods:
        raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks") or "{}"
        try:
            annotated = [k for k in json.loads(raw) if k != "default"]
        except ValueError:
            continue
        for key in annotated:
            attached.setdefault(models.nad_name_of(key), []).append(models.pod_key(pod))
    networks = []
    for name, (spec, keys) in sorted(resolution.networks.items()):
        networks.append({"network": name, "topology": spec.topology, "config": spec.describe(),
                         "nads": list(keys), "pods": sorted({p for k in keys for p in attached.get(k, [])})})
    return {"networks": networks, "conflicts": dict(resolution.conflicts), "invalid": dict(resolution.invalid)}


@click.command("networks")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def networks_command(as_json: bool) -> None:
    """Secondary networks: their topology, NADs and attached pods, and NADs that are ignored and why."""
    with KubeClient.from_settings(command_config().kubernetes) as kube:
        doc = network_rows(kube)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if not doc["networks"] and not doc["conflicts"] and not doc["invalid"]:
        click.echo("no secondary networks (no NetworkAttachmentDefinition of type ovn-k8s-cni-overlay)")
        return
    for net in doc["networks"]:
        click.echo(f"{net['network']}: {net['config']}")
        click.echo(f"  NADs: {', '.join(net['nads'])}")
        click.echo(f"  pods: {', '.join(net['pods']) or '-'}")
    for key, why in sorted({**doc["conflicts"], **doc["invalid"]}.items()):
        click.echo(f"ignored {key}: {why}")
