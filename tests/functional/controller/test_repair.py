"""Startup repair against a real NB and API server: stale, drifted, unclaimed and foreign rows."""

from __future__ import annotations

import textwrap
import uuid

import pytest

from ovnk.core.kube.resources import NAMESPACES
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

CONTROLLER = "default-network-controller"

# A plugin owning ACLs: one ACL per namespace labelled "audit=on".
AUDIT_PLUGIN = textwrap.dedent('''
    from ovnk import hookimpl, OwnerType, ControllerSpec
    from ovnk.core.reconcile.spec import Watch
    from ovnk.core.kube.resources import NAMESPACES
    from ovnk.core.ovn.commands import Match, Parent

    AUDIT = OwnerType(name="Audit", table="Address_Set", keys=("name",))

    @hookimpl
    def ovnk_claims(claims):
        claims.owner_type(AUDIT)

    def wanted(ctx):
        return {n["metadata"]["name"] for n in ctx.cache(NAMESPACES).list()
                if (n["metadata"].get("labels") or {}).get("audit") == "on"}

    @hookimpl
    def ovnk_controllers(ctx):
        def reconcile(req):
            oids = AUDIT.ids(ctx.controller_name, name=req.key)
            with ctx.nb.transaction(reason=f"audit {req.key}", owner="Audit") as txn:
                if req.key in wanted(ctx):
                    txn.ensure("Address_Set", name=oids.hashed_name, ids=oids, columns={"addresses": ["10.0.0.1"]})
                else:
                    txn.remove("Address_Set", name=oids.hashed_name)
        return [ControllerSpec(name="audit", watches=(Watch(NAMESPACES),), reconcile=reconcile)]

    @hookimpl
    def ovnk_repair(ctx, plan):
        for row in ctx.nb.owned(AUDIT):
            if row.external_ids["k8s.ovn.org/name"] not in wanted(ctx):
                plan.stale(row, reason="namespace gone or not audited")
''')


def audit_sets(env: ClusterEnv) -> dict[str, list[str]]:
    return {nb_value(r["external_ids"])["k8s.ovn.org/name"]: nb_value(r["addresses"])
            for r in env.nb_rows("Address_Set")
            if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Audit"
            and nb_value(r["external_ids"]).get("k8s.ovn.org/owner-controller") == CONTROLLER}


def seed(env: ClusterEnv, audited: str = "t-audited") -> None:
    """Rows as another process (or an earlier version of us) could have left them."""
    ids = f'external_ids:"k8s.ovn.org/owner-controller"={CONTROLLER} external_ids:"k8s.ovn.org/owner-type"=Audit'
    for name, addresses in (("t-gone", "10.0.0.1"), (audited, "10.9.9.9")):
        env.central.nbctl("create", "Address_Set", f"name=audit_{name}", f"addresses={addresses}",
                          *ids.split(), f'external_ids:"k8s.ovn.org/name"={name}',
                          f'external_ids:"k8s.ovn.org/id"={CONTROLLER}:Audit:{name}')
    # Foreign rows: another system's, and one with our owner type but another controller.
    env.central.nbctl("create", "Address_Set", "name=foreign_set", "addresses=1.1.1.1", "external_ids:neutron=yes")
    env.central.nbctl("create", "Address_Set", "name=other_controller", "addresses=2.2.2.2",
                      'external_ids:"k8s.ovn.org/owner-controller"=blue-network-controller',
                      'external_ids:"k8s.ovn.org/owner-type"=Audit', 'external_ids:"k8s.ovn.org/name"=x')
    env.central.nbctl("ls-add", "foreign_switch")


@pytest.fixture
def audit_plugin(fake_dists):
    fake_dists.add("ovnk-audit", plugins={"audit": "audit_plugin"}, modules={"audit_plugin": AUDIT_PLUGIN})


def set_names(env: ClusterEnv) -> set[str]:
    return {nb_value(r["name"]) for r in env.nb_rows("Address_Set")}


@pytest.mark.kube
@pytest.mark.ovn
def test_repair_deletes_stale_fixes_drift_and_never_touches_foreign_rows(env: ClusterEnv, audit_plugin) -> None:
    audited = f"t-audited-{uuid.uuid4().hex[:6]}"
    env.create_namespace(audited)
    env.client.patch(NAMESPACES, audited, {"metadata": {"labels": {"audit": "on"}}})
    seed(env, audited)
    env.start_controller("plugins.enabled=audit")
    env.wait_idle()
    sets = audit_sets(env)
    assert "t-gone" not in sets, "stale row deleted"
    assert sets[audited] == "10.0.0.1", "drift fixed by the first reconcile"
    assert f"audit_{audited}" not in set_names(env), "our row under a wrong name is renamed, not duplicated"
    assert {"foreign_set", "other_controller"} <= set_names(env), "foreign rows untouched"
    assert "foreign_switch" in env.central.nbctl("ls-list")
    assert env.process is not None and env.process.repaired >= 1


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.parametrize("mode", ["off", "log"])
def test_repair_modes_off_and_log_delete_nothing(env: ClusterEnv, audit_plugin, mode: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    seed(env)
    caplog.set_level("INFO")
    env.start_controller("plugins.enabled=audit", f"controller.repair-mode={mode}")
    env.wait_idle()
    assert "audit_t-gone" in set_names(env)
    planned = [r.message for r in caplog.records if "repair plan: delete Address_Set audit_t-gone" in r.message]
    assert bool(planned) == (mode == "log")


@pytest.mark.kube
@pytest.mark.ovn
def test_switching_a_plugin_off_removes_its_rows_at_next_start(env: ClusterEnv, audit_plugin) -> None:
    audited = f"t-audited-{uuid.uuid4().hex[:6]}"
    env.create_namespace(audited)
    env.client.patch(NAMESPACES, audited, {"metadata": {"labels": {"audit": "on"}}})
    env.start_controller("plugins.enabled=audit")
    env.wait_idle()
    assert audited in audit_sets(env)
    env.stop_controller()
    seed(env)  # plus foreign rows that must survive
    env.start_controller()  # the plugin is switched off
    env.wait_idle()
    assert audit_sets(env) == {}, "every Audit row of ours is gone"
    assert {"foreign_set", "other_controller"} <= set_names(env)
    assert nb_value(next(r for r in env.nb_rows("Address_Set") if nb_value(r["name"]) == "other_controller")[
        "external_ids"])["k8s.ovn.org/owner-controller"] == "blue-network-controller"
    # Core's own rows stay.
    assert "ovn_cluster_router" in env.central.nbctl("lr-list")
