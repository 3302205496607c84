"""The ``ovnk trace`` command: reads NB and SB once, runs ``ovn-trace``, answers in Kubernetes terms."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ovnk.core.cli import CliState
from ovnk.core.cli import pass_state


def render(result: Any) -> str:
    """The human answer: verdict line, reason, then every ovnk row the packet met."""
    src, dst = result.source, result.destination
    lines = [f"{src.name} ({src.ip}) -> {dst.name} ({dst.ip}) {result.protocol}/{result.port}: "
             f"{result.verdict.upper()}", f"  {result.reason}"]
    if result.backend:
        lines.append(f"  load balancer chose backend {result.backend['ip']}:{result.backend['port']}"
                     + (f" (pod {result.backend['pod']})" if result.backend.get("pod") else ""))
    if result.snat:
        lines.append(f"  SNAT to {result.snat['external_ip']} on {result.snat['router']}")
    if result.findings:
        lines.append("  on the way:")
        for finding in result.findings:
            lines.append(f"    {finding.datapath} {finding.stage}: {finding.text}"
                         + (f" [{finding.action}]" if finding.action else ""))
    lines.append(f"  microflow on {result.datapath}: {result.microflow}")
    return "\n".join(lines)


@click.command("trace")
@click.argument("source", metavar="NS/POD")
@click.argument("destination", metavar="NS/POD|IP|NS/SERVICE")
@click.option("--tcp", "tcp_port", type=click.IntRange(1, 65535), metavar="PORT", help="TCP destination port.")
@click.option("--udp", "udp_port", type=click.IntRange(1, 65535), metavar="PORT", help="UDP destination port.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ovn-trace", "show_raw", is_flag=True, help="Also print ovn-trace's own output.")
@pass_state
def trace_command(state: CliState, source: str, destination: str, tcp_port: int | None, udp_port: int | None,
                  as_json: bool, show_raw: bool) -> None:
    """Why can (or can't) a pod reach a pod, a service or an address: allowed or dropped, and by what.

    Runs ovn-trace on the source pod's switch for a new connection (default TCP; port 80, or the
    service's port) and names the NetworkPolicy rule, load balancer backend, router policy or NAT
    behind each step from the external_ids ovnk writes. Reads NB and SB at [ovnnorth]/[ovnsouth].
    """
    from ovnk.core.controller import ssl_files
    from ovnk.core.ovn.snapshot import ovn_trace
    from ovnk.core.ovn.snapshot import read_tables
    from ovnk.core.trace.engine import CT_STEPS
    from ovnk.core.trace.engine import trace
    from ovnk.core.trace.model import NB_COLUMNS
    from ovnk.core.trace.model import SB_COLUMNS
    from ovnk.core.trace.model import OvnState

    if tcp_port is not None and udp_port is not None:
        raise click.UsageError("give --tcp or --udp, not both")
    protocol, port = ("udp", udp_port) if udp_port is not None else ("tcp", tcp_port)
    rt = state.runtime(configure=False)
    cfg = rt.config
    nb_ssl, sb_ssl = ssl_files(cfg.ovnnorth), ssl_files(cfg.ovnsouth)
    nb = read_tables(remote=cfg.ovnnorth.address, schema="OVN_Northbound", tables=NB_COLUMNS, ssl=nb_ssl)
    sb = read_tables(remote=cfg.ovnsouth.address, schema="OVN_Southbound", tables=SB_COLUMNS, ssl=sb_ssl)
    ovn_state = OvnState.from_rows(nb, sb)
    ct_steps = ["new"] * CT_STEPS

    def run(datapath: str, flow: str) -> str:
        return ovn_trace(sb_remote=cfg.ovnsouth.address, datapath=datapath, microflow=flow, ct_states=ct_steps,
                         ssl=sb_ssl)

    result = trace(ovn_state, source=source, destination=destination, protocol=protocol, port=port, run=run,
                   hook=rt.pm.hook)
    if as_json:
        doc = result.as_dict()
        if show_raw:
            doc["ovn_trace"] = result.raw
        click.echo(json.dumps(doc, indent=2))
    else:
        if show_raw:
            click.echo(result.raw)
        click.echo(render(result))
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(trace_command)
