"""The controller's start-up phases against a real API server and NB: restore, repair, workers, tasks.

Regressions of the phase split: with ``repair-mode = off`` the allocators were
never restored (a new node could get an existing node's subnet), with ``log``
the namespace address sets were still rewritten, a restart let a pod with a
hand-written annotation take another pod's IP (D1), and a changed node fact
left its pods' ports on the old chassis (D3).
"""

from __future__ import annotations

import ipaddress
import json
import textwrap
import time
import uuid
from typing import Any

import pytest

from ovnk.core.errors import StartupError
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NODES
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value


def annotation(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"]["k8s.ovn.org/pod-networks"])["default"]


def wait_annotated(env: ClusterEnv, namespace: str, names: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = {p["metadata"]["name"]: p for p in env.pods(namespace)}
        done = {n: pods[n] for n in names if n in pods
                and "k8s.ovn.org/pod-networks" in (pods[n]["metadata"].get("annotations") or {})}
        if len(done) == len(names):
            return done
        assert time.monotonic() < deadline, f"annotated: {sorted(done)} of {names}"
        time.sleep(0.2)


def node_subnet(env: ClusterEnv, name: str) -> str:
    node = env.client.get(NODES, name)
    assert node is not None
    return str(json.loads(node["metadata"]["annotations"]["k8s.ovn.org/node-subnets"])["default"])


def wait_node_subnet(env: ClusterEnv, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        node = env.client.get(NODES, name) or {}
        if "k8s.ovn.org/node-subnets" in (node.get("metadata", {}).get("annotations") or {}):
            return node_subnet(env, name)
        assert time.monotonic() < deadline, f"node {name} got no subnet"
        time.sleep(0.2)


def ports(env: ClusterEnv) -> dict[str, dict[str, Any]]:
    return {nb_value(r["name"]): r for r in env.nb_rows("Logical_Switch_Port")}


def namespace_set(env: ClusterEnv, ns: str) -> set[str]:
    rows = [r for r in env.nb_rows("Address_Set") if nb_value(r["external_ids"]).get("k8s.ovn.org/name") == ns
            and nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Namespace"]
    assert len(rows) == 1, rows
    return set(nb_value(rows[0]["addresses"]))


def unique(prefix: str) -> str:
    return f"t-{prefix}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------
# repair modes


@pytest.mark.kube
@pytest.mark.ovn
def test_repair_mode_off_still_restores_the_allocators(env: ClusterEnv) -> None:
    """Before the split, ``off`` skipped restore: the next node got the first node's subnet."""
    env.start_controller()
    env.create_node("keep-1", 0)
    first = wait_node_subnet(env, "keep-1")
    ns = unique("off")
    env.create_namespace(ns)
    env.create_pod(ns, "old", "keep-1")
    old_ip = annotation(wait_annotated(env, ns, ["old"])["old"])["ip_addresses"][0]
    env.wait_idle()
    env.stop_controller()

    env.start_controller("controller.repair-mode=off")
    env.create_node("keep-2", 1)
    second = wait_node_subnet(env, "keep-2")
    assert second != first, f"node keep-2 got keep-1's subnet {first} again"
    env.create_pod(ns, "new", "keep-1")
    new_ip = annotation(wait_annotated(env, ns, ["new"])["new"])["ip_addresses"][0]
    assert new_ip != old_ip, f"pod new got pod old's IP {old_ip}"


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.parametrize("mode", ["log", "repair"])
def test_repair_mode_log_plans_the_address_set_content_and_writes_nothing(
        env: ClusterEnv, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """Before the split, ``log`` still rewrote every namespace address set."""
    env.start_controller()
    env.create_node("as-1", 0)
    ns = unique("log")
    env.create_namespace(ns)
    for name in ("a", "b"):
        env.create_pod(ns, name, "as-1")
    pods = wait_annotated(env, ns, ["a", "b"])
    env.wait_idle()
    env.stop_controller()
    gone_ip = annotation(pods["b"])["ip_addresses"][0].split("/")[0]
    env.delete_pod(ns, "b")  # while no controller runs: its IP stays in the set
    env.central.wait_northd()
    mark = env.central.nb.mark()

    caplog.set_level("INFO")
    env.start_controller(f"controller.repair-mode={mode}")
    env.wait_idle()
    planned = [r.message for r in caplog.records if "repair plan: set addresses of Address_Set" in r.message]
    if mode == "log":
        assert gone_ip in namespace_set(env, ns), "log mode must not write"
        assert planned, "the drift is logged as a plan"
        assert f"{ns}_b" in ports(env), "the stale port is only planned"
        assert env.central.nb.writes_since(mark) == [], "nothing at all was written in log mode"
    else:
        assert gone_ip not in namespace_set(env, ns)
        assert f"{ns}_b" not in ports(env)


# ---------------------------------------------------------------------------
# restore trusts what ovnk committed (D1)


@pytest.mark.kube
@pytest.mark.ovn
def test_restart_never_hands_a_pods_ip_or_mac_to_a_hand_written_annotation(env: ClusterEnv) -> None:
    env.start_controller()
    env.create_node("dup-node", 0)
    ns = unique("dup")
    env.create_namespace(ns)
    env.create_pod(ns, "victim", "dup-node")
    victim = annotation(wait_annotated(env, ns, ["victim"])["victim"])
    env.wait_idle()
    # A pod created (sorted first) with the victim's IP and MAC in a hand-written annotation: refused.
    forged = {"default": {**victim}}
    env.create_pod(ns, "aaa-forged", "dup-node",
                   annotations={"k8s.ovn.org/pod-networks": json.dumps(forged)})
    # Another with a fresh IP but the victim's MAC: refused as well.
    fresh_ip = str(ipaddress.ip_interface(victim["ip_addresses"][0]).ip + 50)
    same_mac = {"default": {**victim, "ip_addresses": [f"{fresh_ip}/24"], "ip_address": f"{fresh_ip}/24"}}
    env.create_pod(ns, "aab-same-mac", "dup-node",
                   annotations={"k8s.ovn.org/pod-networks": json.dumps(same_mac)})
    env.wait_idle()
    assert f"{ns}_aaa-forged" not in ports(env)
    assert f"{ns}_aab-same-mac" not in ports(env), "a duplicate MAC is refused like a duplicate IP"

    for _ in range(2):  # a restart (twice: restore must be stable) keeps the victim's addresses the victim's
        env.stop_controller()
        env.start_controller()
        env.wait_idle()
        by_name = ports(env)
        assert f"{ns}_aaa-forged" not in by_name and f"{ns}_aab-same-mac" not in by_name
        victim_port = by_name[f"{ns}_victim"]
        assert nb_value(victim_port["addresses"]) == f"{victim['mac_address']} {victim['ip_addresses'][0].split('/')[0]}"
        holders = {p for p, row in by_name.items()
                   if victim["ip_addresses"][0].split("/")[0] in str(nb_value(row["addresses"]))}
        assert holders == {f"{ns}_victim"}
        assert env.process is not None and env.process.ctx is not None
        ip = ipaddress.ip_interface(victim["ip_addresses"][0]).ip
        pool = env.process.ctx.topology.pool_for_ip("dup-node", ip)
        assert pool is not None and pool.holder(ip) is not None and pool.holder(ip).startswith(f"{ns}/victim ")
    events = env.client.list(EVENTS, namespace=ns)[0]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert ("aaa-forged", "ErrorAllocatingIP") in reasons and ("aab-same-mac", "ErrorAllocatingIP") in reasons


# ---------------------------------------------------------------------------
# node facts re-run the node's pods (D3)


def requested_chassis(env: ClusterEnv, ns: str) -> dict[str, str]:
    return {name: nb_value(row["options"]).get("requested-chassis", "") for name, row in ports(env).items()
            if name.startswith(f"{ns}_")}


@pytest.mark.kube
@pytest.mark.ovn
def test_a_changed_chassis_id_moves_every_port_of_the_node(env: ClusterEnv) -> None:
    env.start_controller()
    env.create_node("ch-1", 0)
    ns = unique("chassis")
    env.create_namespace(ns)
    names = [f"p{i}" for i in range(8)]
    for name in names:
        env.create_pod(ns, name, "ch-1")
    wait_annotated(env, ns, names)
    env.wait_idle()
    original = env.chassis["ch-1"]
    assert set(requested_chassis(env, ns).values()) == {original}

    def set_chassis(value: str) -> None:
        env.client.patch(NODES, "ch-1", {"metadata": {"annotations": {"k8s.ovn.org/node-chassis-id": value}}})

    def wait_all(value: str) -> None:
        deadline = time.monotonic() + 30
        while set(requested_chassis(env, ns).values()) != {value}:
            assert time.monotonic() < deadline, f"ports still on {requested_chassis(env, ns)}, wanted {value}"
            time.sleep(0.2)

    for _ in range(3):  # a genuine change, then flips back and forth
        moved = str(uuid.uuid4())
        set_chassis(moved)
        wait_all(moved)
        set_chassis(original)
        wait_all(original)


# ---------------------------------------------------------------------------
# phase hooks of a plugin

PHASES = textwrap.dedent('''
    from ovnk import hookimpl, OwnerType, ControllerSpec, PeriodicTask, Watch
    from ovnk.core.kube.resources import NAMESPACES

    PHASE_SET = OwnerType(name="PhaseProbe", table="Address_Set", keys=("name",))
    ORDER = []
    MODE = {"restore": "read"}

    class Runtime:
        def __init__(self):
            self.ticks = 0

        @hookimpl
        def ovnk_claims(self, claims):
            claims.owner_type(PHASE_SET)

        @hookimpl
        def ovnk_controllers(self, ctx):
            self.ctx = ctx
            def reconcile(req):
                ORDER.append(("reconcile", req.key))
            return [ControllerSpec(name="phases", watches=(Watch(NAMESPACES),), reconcile=reconcile)]

        @hookimpl
        def ovnk_controller_tasks(self, ctx):
            def tick():
                self.ticks += 1
                ORDER.append(("tick", self.ticks))
                ctx.enqueue("phases", f"tick-{self.ticks}")
            return [PeriodicTask(name="phase-ticker", interval=0.2, run=tick)]

        @hookimpl
        def ovnk_restore(self, ctx):
            ORDER.append(("restore", None))
            if MODE["restore"] == "write":
                oids = PHASE_SET.ids(ctx.controller_name, name="x")
                with ctx.nb.transaction(reason="restore writes", owner="PhaseProbe") as txn:
                    txn.ensure("Address_Set", name=oids.hashed_name, ids=oids)
            if MODE["restore"] == "raise":
                raise ValueError("cannot read my state")

        @hookimpl
        def ovnk_repair(self, ctx, plan):
            ORDER.append(("repair", None))

    @hookimpl
    def ovnk_configure(config, pluginmanager):
        pluginmanager.register_runtime("phases", Runtime())
''')


@pytest.fixture
def phases_plugin(fake_dists: Any) -> Any:
    fake_dists.add("ovnk-phases", plugins={"phases": "phases_plugin"}, modules={"phases_plugin": PHASES})
    import importlib

    module = importlib.import_module("phases_plugin")
    module.ORDER.clear()
    module.MODE["restore"] = "read"
    return module


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_restore_repair_and_controller_tasks_run_in_phases(env: ClusterEnv, phases_plugin: Any) -> None:
    env.start_controller("plugins.enabled=phases")
    deadline = time.monotonic() + 30
    while not any(kind == "reconcile" and str(key).startswith("tick-") for kind, key in phases_plugin.ORDER):
        assert time.monotonic() < deadline, phases_plugin.ORDER
        time.sleep(0.05)
    kinds = [kind for kind, _ in phases_plugin.ORDER]
    assert kinds[:2] == ["restore", "repair"], kinds
    assert kinds.index("tick") > kinds.index("repair")
    assert env.process is not None and env.process.runner is not None
    assert env.process.runner.wait_idle(10), "ticks enqueue work that finishes"
    env.stop_controller()
    ticks = kinds.count("tick")
    time.sleep(0.5)
    assert [kind for kind, _ in phases_plugin.ORDER].count("tick") <= ticks + 1, "tasks stop with the controller"


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.parametrize(("mode", "message"), [
    ("write", "plugin 'phases' failed in ovnk_restore: PluginError: NB transaction for restore writes refused: "
              "ovnk_restore must not write"),
    ("raise", "plugin 'phases' failed in ovnk_restore: ValueError: cannot read my state"),
])
def test_hook_restore_failure_stops_start_up_naming_the_plugin(env: ClusterEnv, phases_plugin: Any, mode: str,
                                                               message: str) -> None:
    phases_plugin.MODE["restore"] = mode
    with pytest.raises(StartupError) as failed:
        env.start_controller("plugins.enabled=phases")
    assert str(failed.value) == message
    assert "reconcile" not in [kind for kind, _ in phases_plugin.ORDER], "no worker ran"
    assert not [r for r in env.nb_rows("Address_Set")
                if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "PhaseProbe"]
    assert env.process is None
