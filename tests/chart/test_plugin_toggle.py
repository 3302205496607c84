"""Switching a plugin on and off in values: its CRDs (from its own files), RBAC and config follow.

Uses a copy of the chart and plugins tree with one more plugin folder (TEMP_PLUGIN,
two CRD files), so the test says something whatever first-party plugins exist.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from .conftest import TEMP_PLUGIN
from .conftest import first_party_plugins
from .conftest import lint
from .conftest import plugin_crd_files
from .conftest import plugin_values
from .conftest import render


def _crd_files(chart: Path) -> list[Path]:
    return plugin_crd_files(TEMP_PLUGIN, root=chart.parent.parent)


def test_switching_a_plugin_off_removes_its_crds_rbac_and_config(chart_tree: Path) -> None:
    files = _crd_files(chart_tree)
    assert len(files) == 2
    on_values = {"plugins": {TEMP_PLUGIN: {"enabled": True, "settings": {"greeting": "hi", "sizes": [1, 2]}}}}
    lint(on_values, chart=chart_tree)
    on = render(on_values, chart=chart_tree)
    off = render({"plugins": {TEMP_PLUGIN: {"enabled": False, "settings": {"greeting": "hi"}}}}, chart=chart_tree)
    absent = render(chart=chart_tree)

    crds = {yaml.safe_load(f.read_text())["metadata"]["name"] for f in files}
    assert crds == {"widgets.charttest.ovnk.example", "gadgets.charttest.ovnk.example"}
    assert on.crd_names() == crds
    assert TEMP_PLUGIN in on.enabled_plugins()
    assert on.ini()[TEMP_PLUGIN] == {"greeting": "hi", "sizes": "1,2"}
    for rendered in (off, absent):
        assert rendered.crd_names() == set()
        assert TEMP_PLUGIN not in rendered.enabled_plugins()
        assert TEMP_PLUGIN not in rendered.ini()

    # RBAC for the plugin's custom resources: read-write (and the status subresource's patch) for the
    # controller, read-only for nodes.
    def rule(rendered: object, role: str, resource: str = "widgets") -> dict[str, object] | None:
        rules = rendered.one("ClusterRole", role)["rules"]  # type: ignore[attr-defined]
        return next((r for r in rules if r["apiGroups"] == ["charttest.ovnk.example"]
                     and resource in r["resources"]), None)

    controller_rule = rule(on, "-controller")
    node_rule = rule(on, "-node")
    assert controller_rule is not None and node_rule is not None
    assert controller_rule["resources"] == ["widgets"]
    assert set(controller_rule["verbs"]) == {"get", "list", "watch", "patch"}  # type: ignore[arg-type]
    assert rule(on, "-controller", "widgets/status") == {
        "apiGroups": ["charttest.ovnk.example"], "resources": ["widgets/status"], "verbs": ["patch"]}
    assert set(node_rule["verbs"]) == {"get", "list", "watch"}  # type: ignore[arg-type]
    assert rule(on, "-node", "widgets/status") is None
    assert rule(off, "-controller") is None and rule(off, "-node") is None

    # Nothing else depends on the plugin: the other documents are the same.
    def others(rendered: object) -> list[tuple[str, str]]:
        return sorted((d["kind"], d["metadata"]["name"]) for d in rendered.docs  # type: ignore[attr-defined]
                      if d["kind"] != "CustomResourceDefinition")

    assert others(on) == others(off) == others(absent)


def test_crds_are_rendered_verbatim_from_the_plugin_files(chart_tree: Path) -> None:
    on = render(plugin_values([TEMP_PLUGIN]), chart=chart_tree)
    for path in _crd_files(chart_tree):
        text = path.read_text().strip()
        assert text in on.text  # byte for byte, comments included
        document = yaml.safe_load(text)
        [rendered] = [d for d in on.of_kind("CustomResourceDefinition")
                      if d["metadata"]["name"] == document["metadata"]["name"]]
        assert rendered == document


def test_an_edited_crd_file_changes_the_rendering_at_once(chart_tree: Path) -> None:
    """No copy to forget: the chart reads the plugin's file itself."""
    path = _crd_files(chart_tree)[-1]  # widgets.yaml
    document = yaml.safe_load(path.read_text())
    document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["color"] = {
        "type": "string"}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    on = render(plugin_values([TEMP_PLUGIN]), chart=chart_tree)
    [rendered] = [d for d in on.of_kind("CustomResourceDefinition") if d["metadata"]["name"] == "widgets.charttest.ovnk.example"]
    assert rendered == document


def test_a_new_plugin_folder_needs_no_template_change(chart_tree: Path) -> None:
    """A second new plugin is picked up from its folder alone; values name it, templates do not."""
    root = chart_tree.parent.parent
    crds = root / "plugins" / "anotherplugin" / "crds"
    crds.mkdir(parents=True)
    (crds.parent / "__init__.py").write_text("")
    (crds / "things.yaml").write_text(textwrap.dedent("""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: things.another.ovnk.example}
        spec:
          group: another.ovnk.example
          scope: Namespaced
          names: {plural: things, singular: thing, kind: Thing}
          versions:
            - {name: v1, served: true, storage: true,
               schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
        """))
    every = first_party_plugins(root)
    assert {TEMP_PLUGIN, "anotherplugin"} <= set(every)
    on = render(plugin_values(every), chart=chart_tree)
    assert "things.another.ovnk.example" in on.crd_names()
    assert on.enabled_plugins() == sorted(every)
    only_temp = render(plugin_values([TEMP_PLUGIN], disabled=["anotherplugin"]), chart=chart_tree)
    assert "things.another.ovnk.example" not in only_temp.crd_names()
    assert only_temp.enabled_plugins() == [TEMP_PLUGIN]


def test_keep_crds_adds_only_the_resource_policy(chart_tree: Path) -> None:
    plain = render(plugin_values([TEMP_PLUGIN]), chart=chart_tree)
    kept = render({**plugin_values([TEMP_PLUGIN]), "keepCrds": True}, chart=chart_tree)
    for document in plain.of_kind("CustomResourceDefinition"):
        [other] = [d for d in kept.of_kind("CustomResourceDefinition")
                   if d["metadata"]["name"] == document["metadata"]["name"]]
        assert other["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert other == document
