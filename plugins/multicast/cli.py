"""``ovnk multicast groups``: which pods joined which group, as OVN learnt it (SB ``IGMP_Group``).

The controller has no Southbound connection; this command opens its own,
read-only, to the database the invocation's configuration names
(``[ovnsouth] address``, or ``ovnk --sb-address <remote> multicast groups``).
"""

from __future__ import annotations

import json

import click

from ovnk import command_config
from ovnk import open_db_view
from ovnk.plugins.multicast.groups import Member
from ovnk.plugins.multicast.groups import learnt_groups

TABLES = ("IGMP_Group", "Port_Binding", "Datapath_Binding")


def read_groups(settings: object, *, timeout: float = 10.0) -> dict[str, list[Member]]:
    """The learnt groups of the Southbound database of ``settings`` (``config.ovnsouth``)."""
    with open_db_view(settings, schema="OVN_Southbound", tables=TABLES, timeout=timeout) as view:
        return learnt_groups(view.rows("IGMP_Group", columns=("address", "datapath", "ports")),
                             ports=view.by_uuid("Port_Binding", columns=("logical_port",)),
                             datapaths=view.by_uuid("Datapath_Binding"))


@click.group("multicast")
def multicast_group() -> None:
    """Multicast: IP multicast between the pods of a namespace."""


@multicast_group.command("groups")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the Southbound database.")
def groups_command(as_json: bool, timeout: float) -> None:
    """Each multicast group OVN has learnt, with the pods (and nodes) that joined it."""
    settings = command_config().ovnsouth
    groups = read_groups(settings, timeout=timeout)
    if as_json:
        click.echo(json.dumps({address: [{"node": m.node, "pod": m.pod, "port": m.port} for m in members]
                               for address, members in groups.items()}, indent=2))
        return
    if not groups:
        click.echo(f"no multicast group learnt (Southbound database at {settings.address})")
        return
    width = max(len(address) for address in groups)
    node_width = max((len(m.node) for members in groups.values() for m in members), default=1)
    for address, members in groups.items():
        if not members:
            click.echo(f"{address:<{width}}  (no member left)")
        for index, member in enumerate(members):
            shown = member.pod if member.pod is not None else f"port {member.port}"
            click.echo(f"{address if index == 0 else '':<{width}}  {member.node:<{node_width}}  {shown}")
