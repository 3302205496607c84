"""Namespace port groups on demand (ovnk_namespace_port_groups), against a real API server and NB."""

from __future__ import annotations

import textwrap
import time
import uuid
from typing import Any

import pytest

from ovnk.names import namespace_port_group
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

CONTROLLER = "default-network-controller"
NEEDS_GROUPS = textwrap.dedent('''
    from ovnk import hookimpl

    @hookimpl
    def ovnk_namespace_port_groups(ctx):
        return True
''')


def groups(env: ClusterEnv) -> dict[str, list[str]]:
    """namespace -> names of the ports in its port group."""
    ports = {nb_value(r["_uuid"])[1]: nb_value(r["name"]) for r in env.nb_rows("Logical_Switch_Port")}
    found = {}
    for row in env.nb_rows("Port_Group"):
        ids = nb_value(row["external_ids"])
        if ids.get("k8s.ovn.org/owner-type") == "Namespace":
            members = nb_value(row["ports"])
            members = members if isinstance(members, list) else [members]
            # Two reads, not one snapshot: a port deleted between them is gone from the group next time.
            found[ids["k8s.ovn.org/name"]] = sorted(ports[m[1]] for m in members if m and m[1] in ports)
            assert nb_value(row["name"]) == namespace_port_group(CONTROLLER, ids["k8s.ovn.org/name"])[0]
    return found


def wait(what: str, check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_namespace_port_groups_made_on_demand_and_removed_when_nobody_needs_them(
        env: ClusterEnv, fake_dists: Any) -> None:
    fake_dists.add("ovnk-needs-groups", plugins={"groups": "needs_groups"}, modules={"needs_groups": NEEDS_GROUPS})
    env.start_controller()
    env.create_node("pg-1", 0)
    ns = f"t-pg-{uuid.uuid4().hex[:6]}"
    env.create_namespace(ns)
    env.create_pod(ns, "a", "pg-1")
    env.wait_idle()
    assert ns not in groups(env), "nobody asked for namespace port groups"
    env.stop_controller()

    env.start_controller("plugins.enabled=groups")
    env.create_pod(ns, "b", "pg-1")
    wait("both pods in their namespace's group", lambda: groups(env).get(ns) == [f"{ns}_a", f"{ns}_b"])
    env.delete_pod(ns, "a")
    wait("a deleted pod leaves the group", lambda: groups(env).get(ns) == [f"{ns}_b"])
    env.stop_controller()

    env.start_controller()
    env.wait_idle()
    assert groups(env) == {}, "switched off: repair removes them"
