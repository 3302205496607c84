"""``ovnk sandbox ...``: the local multi-node cluster (see :mod:`ovnk_lab.sandbox`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

from ovnk.core.errors import OvnkError


def _sandbox(prefix: str, subnet: str | None = None) -> object:
    from ovnk_lab.cluster import DEFAULT_SUBNET
    from ovnk_lab.sandbox import Sandbox

    return Sandbox(prefix=prefix, subnet=subnet or DEFAULT_SUBNET,
                   progress=lambda message: click.echo(f"  {message}", err=True))


@click.group("sandbox")
@click.option("--prefix", default="ovnk", show_default=True, help="Sandbox name (namespaces, work dir).")
@click.pass_context
def sandbox_group(ctx: click.Context, prefix: str) -> None:
    """A local multi-node Kubernetes cluster (kubelets, containerd, OVN) networked by ovnk."""
    ctx.ensure_object(dict)["prefix"] = prefix


def _fail(exc: Exception) -> None:
    click.echo(f"ovnk: error: {exc}", err=True)
    sys.exit(1)


@sandbox_group.command("up")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--plugins", default="", help="Comma-separated plugins to enable.")
@click.option("--db-cluster", default=1, show_default=True, type=click.Choice(["1", "3"]),
              help="3 runs NB and SB as 3-member RAFT clusters.")
@click.option("--controllers", default=1, show_default=True, type=click.IntRange(1, 3),
              help="Controller replicas (leader election picks the writer).")
@click.option("--ssl", is_flag=True, help="NB/SB serve TLS only; every component connects with a client certificate.")
@click.option("--subnet", default=None, metavar="CIDR",
              help="Underlay /24 (default 172.30.0.0/24); another one lets two sandboxes run side by side.")
@click.option("--cluster-dns", is_flag=True,
              help="Service names for pods: a dnsmasq behind kube-system/kube-dns (10.96.0.10), kubelets' clusterDNS.")
@click.option("--deploy", default="processes", show_default=True, type=click.Choice(["processes", "helm"]),
              help="helm: no OVN/ovnk processes of the sandbox's own; the image is built (cached) and imported, "
              "and charts/ovnk installed with Helm (ovnk_lab.chartdeploy).")
@click.option("--set", "helm_sets", multiple=True, metavar="KEY=VALUE",
              help="A chart value with --deploy helm (repeatable), e.g. plugins.multicast.enabled=true.")
@click.pass_context
def up_command(ctx: click.Context, nodes: int, plugins: str, db_cluster: str, controllers: int, ssl: bool,
               subnet: str | None, cluster_dns: bool, deploy: str, helm_sets: tuple[str, ...]) -> None:
    """Start the sandbox; refuses when one is already running."""
    from ovnk_lab.sandbox import SandboxOptions
    from ovnk_lab.sandbox import describe_usage

    try:
        sandbox = _sandbox(ctx.obj["prefix"], subnet)
    except ValueError as exc:
        _fail(ValueError(f"bad --subnet {subnet!r}: {exc}"))
        return
    if deploy == "helm" and (plugins or db_cluster != "1" or controllers != 1 or ssl):
        _fail(OvnkError("with --deploy helm, plugins, databases, replicas and TLS are chart values: use --set "
                        "(plugins.<name>.enabled=true, ovnDb.mode=raft, controller.replicas=N, ovnDb.ssl.enabled=...)"))
        return
    if helm_sets and deploy != "helm":
        _fail(OvnkError("--set needs --deploy helm"))
        return
    options = SandboxOptions(nodes=nodes, plugins=tuple(p.strip() for p in plugins.split(",") if p.strip()),
                             db_cluster=int(db_cluster), controllers=controllers, ssl=ssl, cluster_dns=cluster_dns,
                             deploy=deploy, helm_sets=helm_sets)
    try:
        sandbox.up(options)  # type: ignore[attr-defined]
        click.echo(describe_usage(sandbox))  # type: ignore[arg-type]
    except OvnkError as exc:
        _fail(exc)


@sandbox_group.command("down")
@click.pass_context
def down_command(ctx: click.Context) -> None:
    """Remove every process, mount, namespace, link and file of the sandbox."""
    try:
        _sandbox(ctx.obj["prefix"]).down()  # type: ignore[attr-defined]
    except OvnkError as exc:
        _fail(exc)


@sandbox_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Nodes, pods and daemons (with pids) of the sandbox."""
    sandbox = _sandbox(ctx.obj["prefix"])
    status = sandbox.cluster.status()  # type: ignore[attr-defined]
    pods: list[str] = []
    if status.running:
        try:
            out = sandbox.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False)  # type: ignore[attr-defined]
            pods = out.splitlines()
        except OvnkError:
            pods = []
    if as_json:
        click.echo(json.dumps({"running": status.running, "api_server": status.api_server, "nodes": status.nodes,
                               "processes": [{"name": n, "pid": p, "alive": a} for n, p, a in status.processes]}))
        return
    if not status.running:
        click.echo("no sandbox running")
        return
    healthy = all(alive for _n, _p, alive in status.processes) and status.nodes and all(status.nodes.values())
    click.echo(f"sandbox {ctx.obj['prefix']}: {'healthy' if healthy else 'DEGRADED'}  api {status.api_server}")
    click.echo("nodes:")
    for name, ready in sorted(status.nodes.items()):
        click.echo(f"  {name:<20} {'Ready' if ready else 'NotReady'}")
    click.echo("daemons:")
    for name, pid, alive in status.processes:
        click.echo(f"  {name:<36} pid {pid:<8} {'running' if alive else 'DEAD'}")
    if pods:
        click.echo("pods:")
        for line in pods:
            click.echo(f"  {line}")


@sandbox_group.command("kubeconfig")
@click.pass_context
def kubeconfig_command(ctx: click.Context) -> None:
    """Print the admin kubeconfig path (as the last line)."""
    try:
        click.echo(str(_sandbox(ctx.obj["prefix"]).kubeconfig))  # type: ignore[attr-defined]
    except OvnkError as exc:
        _fail(exc)


@sandbox_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def exec_command(ctx: click.Context, target: str, command: tuple[str, ...]) -> None:
    """Run a host command inside a pod's network namespace: ``ovnk sandbox exec ns/pod -- cmd ...``."""
    namespace, _, pod = target.partition("/")
    if not pod:
        namespace, pod = "default", namespace
    sandbox = _sandbox(ctx.obj["prefix"])
    try:
        netns = sandbox.cluster.pod_netns(namespace, pod)  # type: ignore[attr-defined]
    except OvnkError as exc:
        _fail(exc)
        return
    from ovnk_lab import paths

    result = subprocess.run([paths.system_bin("nsenter"), f"--net={netns}", "--", *command], check=False)
    sys.exit(result.returncode)


@sandbox_group.command("trace", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def trace_command(ctx: click.Context, args: tuple[str, ...]) -> None:
    """``ovnk trace`` against this sandbox (its NB, SB and certificates): ``ovnk sandbox trace ns/a ns/b --tcp 80``."""
    import os

    from ovnk_lab.sandbox import ovnk_argv

    sandbox = _sandbox(ctx.obj["prefix"])
    config = sandbox.controller_config(0)  # type: ignore[attr-defined]
    if not config.exists():
        _fail(OvnkError(f"no sandbox {ctx.obj['prefix']!r} is up ({config} is missing)"))
    from ovnk_lab import paths

    # The sandbox's own OVN first on PATH: ovn-trace must read the pipeline its ovn-northd wrote.
    result = subprocess.run([*ovnk_argv(), "--config", str(config), "trace", *args],
                            env=paths.ovn_install().env({**os.environ, "OVNK_CONFIG": ""}), check=False)
    sys.exit(result.returncode)


@sandbox_group.command("conformance")
@click.option("--focus", default=None, metavar="REGEX", help="Specs to run (default: [sig-network]).")
@click.option("--skip", default="", metavar="REGEX", help="More specs not to run (besides docs/conformance.md's list).")
@click.option("--quick", is_flag=True, help="Only the [Conformance] network specs (what `make test` runs).")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Specs at a time ([Serial] specs run afterwards, alone).")
@click.option("--report-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="JUnit files, e2e.log and summary.txt (default /var/lib/ovnk/conformance/<prefix>).")
@click.option("--quiet", is_flag=True, help="Do not echo the suite's output (it is in e2e.log).")
@click.option("--timeout", default=4 * 3600, show_default=True, type=click.FloatRange(60),
              help="Seconds before the suite is stopped.")
@click.pass_context
def conformance_command(ctx: click.Context, focus: str | None, skip: str, quick: bool, parallel: int,
                        report_dir: Path | None, quiet: bool, timeout: float) -> None:
    """Run Kubernetes' own network e2e specs against the running sandbox (docs/conformance.md).

    The last line is `N passed, M failed, K skipped`; the exit status is 1 when a spec failed.
    """
    from ovnk_lab import conformance

    if focus and quick:
        _fail(OvnkError("--focus and --quick exclude each other"))
    sandbox = _sandbox(ctx.obj["prefix"])
    options = conformance.RunOptions(
        focus=focus or (conformance.QUICK_FOCUS if quick else conformance.DEFAULT_FOCUS), skip=skip,
        parallel=parallel, report_dir=report_dir or conformance.default_report_dir(ctx.obj["prefix"]),
        quiet=quiet, timeout=timeout)
    try:
        summary = conformance.run(sandbox, options,  # type: ignore[arg-type]
                                  progress=lambda message: click.echo(f"  {message}", err=True))
    except OvnkError as exc:
        _fail(exc)
        return
    for result in summary.failed:
        click.echo(f"FAILED: {result.name}")
    click.echo(f"report: {options.report_dir} (summary.txt, junit_*.xml, e2e.log)")
    if summary.incomplete:
        click.echo("INCOMPLETE: stopped at --timeout; the counts cover the specs that finished")
    click.echo(summary.line())
    sys.exit(1 if summary.failed or summary.incomplete else 0)


DEMO_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: demo-1, namespace: default, labels: {app: demo}}
spec:
  nodeName: %(node1)s
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, "100000"]}]
  terminationGracePeriodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: demo-2, namespace: default, labels: {app: demo}}
spec:
  nodeName: %(node2)s
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, "100000"]}]
  terminationGracePeriodSeconds: 1
"""


@sandbox_group.command("demo")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 20))
@click.pass_context
def demo_command(ctx: click.Context, nodes: int) -> None:
    """Bring a sandbox up (if none runs), start two pods on two nodes and ping between them."""
    from ovnk_lab import paths
    from ovnk_lab.sandbox import SandboxOptions
    from ovnk_lab.sandbox import describe_usage

    sandbox = _sandbox(ctx.obj["prefix"])
    try:
        if not sandbox.cluster.status().running:  # type: ignore[attr-defined]
            click.echo(f"starting a {nodes}-node sandbox (real kubelets, containerd and OVN; ovnk networking)")
            sandbox.up(SandboxOptions(nodes=nodes))  # type: ignore[attr-defined]
        names = [n.name for n in sandbox.cluster.nodes]  # type: ignore[attr-defined]
        kubectl = sandbox.cluster.kubectl  # type: ignore[attr-defined]
        kubectl("delete", "pod", "demo-1", "demo-2", "--ignore-not-found", "--wait=true")
        kubectl("apply", "-f", "-", input=DEMO_PODS % {"node1": names[0], "node2": names[-1]})
        kubectl("wait", "--for=condition=Ready", "pod/demo-1", "pod/demo-2", "--timeout=120s")
        out = kubectl("get", "pods", "-o", "wide")
        click.echo(out)
        ip2 = kubectl("get", "pod", "demo-2", "-o", "jsonpath={.status.podIP}").strip()
        click.echo(f"$ kubectl exec demo-1 -- ping -c 3 {ip2}")
        for attempt in range(10):
            ping = subprocess.run(
                [paths.tool_bin("kubectl"), f"--kubeconfig={sandbox.kubeconfig}",  # type: ignore[attr-defined]
                 "exec", "demo-1", "--", "ping", "-c", "3", "-W", "2", ip2],
                capture_output=True, text=True, check=False)
            if ping.returncode == 0 or attempt == 9:
                break
            time.sleep(1)
        click.echo(ping.stdout.rstrip() or ping.stderr.rstrip())
        if ping.returncode != 0:
            click.echo("ovnk: error: the demo pods cannot ping each other", err=True)
            sys.exit(1)
        click.echo("")
        click.echo(describe_usage(sandbox))  # type: ignore[arg-type]
    except OvnkError as exc:
        _fail(exc)
