"""ovnk-hello: a feature plugin in miniature, for third-party authors to copy.

It uses only the public SDK (``ovnk``, ``ovnk.names``, ``ovnk.annotations``)
and shows each kind of contribution a real feature makes:

* a CRD it claims (``Hello``, ``example.com/v1``; the controller installs it);
* a controller (``hello``) that keeps an NB address set per Hello holding the
  IPs of the pods it selects, and writes ``status.selectedPods``;
* a contribution to core's pod transaction (``ovnk_pod_lsp``): a greeted pod's
  logical port carries ``external_ids:example.com/greeting``; a Hello that
  changes re-runs the pods it greets with ``ctx.enqueue`` into core's ``pods``
  controller;
* repair of its rows and a metric;
* on every node, a bridge of its own (``br-hello``) whose flows a node
  controller keeps: one drop flow per Hello with a ``port``;
* commands: ``ovnk hello`` (the greeting from the settings) and
  ``ovnk hello list`` (the Hello objects of the cluster).

The pattern is the one every plugin follows: the module's functions are the
bootstrap hooks; ``ovnk_configure`` registers :class:`HelloPlugin`, whose
methods are the controller and node hooks and which keeps the plugin's state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from prometheus_client import Gauge

import ovnk.annotations as ann
from ovnk import PODS
from ovnk import ControllerSpec
from ovnk import KubeClient
from ovnk import OwnerType
from ovnk import ReconcileRequest
from ovnk import Resource
from ovnk import SelectorError
from ovnk import Watch
from ovnk import command_config
from ovnk import command_settings
from ovnk import hookimpl
from ovnk import parse_selector
from ovnk import setting

NAME = "hello"
HELLOS = Resource("example.com", "v1", "Hello", "hellos")
#: One address set per Hello object (``k8s.ovn.org/name`` = ``<namespace>/<name>``).
HELLO_SET = OwnerType(name="Hello", table="Address_Set", keys=("name",))
GREETING_KEY = "example.com/greeting"
BRIDGE = "br-hello"


@dataclass(frozen=True)
class HelloSettings:
    greeting: str = setting("hello", help="what the hello command prints")
    repeat: int = setting(1, help="how many times", check=lambda v: None if 0 < v < 10 else "must be 1..9")


# -- bootstrap hooks (every process) ------------------------------------------------------


@hookimpl
def ovnk_add_settings(settings):
    settings.add(NAME, HelloSettings)


@hookimpl
def ovnk_claims(claims):
    claims.crd(Path(__file__).parent / "crds" / "hellos.yaml")
    claims.owner_type(HELLO_SET)
    claims.annotation("example.com/hello")


@hookimpl
def ovnk_configure(config, pluginmanager):
    pluginmanager.register_runtime(NAME, HelloPlugin(config.plugin_settings(NAME)))


@hookimpl
def ovnk_register_commands(cli):
    @cli.group("hello", invoke_without_command=True)
    @click.pass_context
    def hello(ctx):
        """Print the configured greeting (or a subcommand)."""
        if ctx.invoked_subcommand is None:
            settings = command_settings(NAME)
            for _ in range(settings.repeat):
                click.echo(settings.greeting)

    @hello.command("list")
    def hello_list():
        """Every Hello object with its greeting and how many pods it greets."""
        with KubeClient.from_settings(command_config().kubernetes) as kube:
            objects, _ = kube.list(HELLOS)
        for obj in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
            meta = obj["metadata"]
            pods = (obj.get("status") or {}).get("selectedPods", "?")
            click.echo(f"{meta['namespace']}/{meta['name']}: {obj['spec']['greeting']!r} greets {pods} pod(s)")


# -- the runtime object: controller and node hooks, and the plugin's state ---------------------


def selector_of(hello: Mapping[str, Any]):
    """The Hello's pod selector (an invalid one selects nothing: the schema lets it through)."""
    try:
        return parse_selector((hello.get("spec") or {}).get("podSelector"), field="spec.podSelector")
    except SelectorError:
        return None


class HelloPlugin:
    def __init__(self, settings: HelloSettings) -> None:
        self.settings = settings
        self.greeted = None
        # Hello key -> the spec last applied: pods are re-run only when a greeting or selector changes.
        self.applied: dict[str, Any] = {}

    @hookimpl
    def ovnk_register_metrics(self, registry):
        self.greeted = Gauge("ovnk_hello_greeted_pods", "Pods some Hello greets.", registry=registry)

    # -- controller ---------------------------------------------------------------------------

    @hookimpl
    def ovnk_controllers(self, ctx):
        self.ctx = ctx
        return [ControllerSpec(name="hello", reconcile=self.reconcile, watches=(
            Watch(HELLOS),
            # A pod that appears, goes or changes labels or IPs re-runs the Hellos of its namespace.
            Watch(PODS, keys=self.hellos_of_pod, needs_update=self.pod_changed),
        ))]

    def hellos_of_pod(self, pod):
        namespace = pod["metadata"]["namespace"]
        return [k for k in self.ctx.cache(HELLOS).keys() if k.startswith(namespace + "/")]

    @staticmethod
    def pod_changed(old, new):
        return (old["metadata"].get("labels") != new["metadata"].get("labels")
                or ann.pod_ips(old) != ann.pod_ips(new))

    def selected(self, hello):
        selector = selector_of(hello)
        if selector is None:
            return []
        return self.ctx.select(PODS, selector, namespace=hello["metadata"]["namespace"])

    def reconcile(self, request: ReconcileRequest) -> None:
        ctx = self.ctx
        namespace, name = request.key.split("/", 1)
        hello = ctx.cache(HELLOS).get(request.key)
        ids = HELLO_SET.ids(ctx.controller_name, name=request.key)
        pods = self.selected(hello) if hello is not None else []
        with ctx.nb.transaction(reason=f"hello {request.key}", owner="Hello") as txn:
            if hello is None:
                txn.remove("Address_Set", name=ids.hashed_name)
            else:
                ips = sorted({str(ip) for pod in pods for ip in ann.pod_ips(pod)})
                txn.ensure("Address_Set", name=ids.hashed_name, ids=ids, columns={"addresses": ips})
        # The greeting lives on each pod's port, written in the pod's own transaction (ovnk_pod_lsp):
        # when a greeting or selector changes, core's pods controller re-runs the namespace's pods.
        # (A pod's own label changes already re-run it.)
        spec = None if hello is None else hello.get("spec")
        if self.applied.get(request.key) != spec:
            for key in ctx.cache(PODS).index_keys("namespace", namespace):
                ctx.enqueue("pods", key)
            if spec is None:
                self.applied.pop(request.key, None)
            else:
                self.applied[request.key] = spec
        if hello is not None and (hello.get("status") or {}).get("selectedPods") != len(pods):
            ctx.kube.patch(HELLOS, name, {"status": {"selectedPods": len(pods)}}, namespace=namespace,
                           subresource="status")
        if self.greeted is not None:
            self.greeted.set(sum(len(self.selected(h)) for h in ctx.cache(HELLOS).list()))

    @hookimpl
    def ovnk_pod_lsp(self, ctx, pod, lsp):
        namespace = pod["metadata"]["namespace"]
        for hello in sorted(ctx.cache(HELLOS).by_index("namespace", namespace), key=lambda h: h["metadata"]["name"]):
            selector = selector_of(hello)
            if selector is not None and selector.matches_object(pod):
                lsp.external_ids[GREETING_KEY] = hello["spec"]["greeting"]
                return

    @hookimpl
    def ovnk_repair(self, ctx, plan):
        live = set(ctx.cache(HELLOS).keys())
        for row in ctx.nb.owned(HELLO_SET):
            if row.external_ids["k8s.ovn.org/name"] not in live:
                plan.stale(row, reason="its Hello object is gone")

    # -- node agent -------------------------------------------------------------------------------

    @hookimpl
    def ovnk_node_setup(self, ctx):
        # The bridge is the plugin's: the agent deletes it when the plugin is switched off.
        ctx.ovs.ensure_bridge(BRIDGE, datapath_type=ctx.config.ovs.datapath_type, fail_mode="secure", owner=NAME)
        ctx.flows.manage(BRIDGE)

    @hookimpl
    def ovnk_node_controllers(self, ctx):
        def reconcile(request):
            ports = sorted({int(h["spec"]["port"]) for h in ctx.cache(HELLOS).list() if h["spec"].get("port")})
            flows = [f"table=0,priority=100,udp,tp_dst={port} actions=drop" for port in ports]
            flows.append("table=0,priority=0 actions=NORMAL")
            if ctx.flows.set_flows(BRIDGE, NAME, flows):
                ctx.flows.sync(BRIDGE)

        return [ControllerSpec(name="hello-flows", reconcile=reconcile, initial_keys=lambda: ["flows"],
                               watches=(Watch(HELLOS, keys=lambda _hello: ["flows"]),))]

    @hookimpl
    def ovnk_node_annotations(self, ctx, annotations):
        annotations["example.com/hello"] = json.dumps({"greeting": self.settings.greeting})
