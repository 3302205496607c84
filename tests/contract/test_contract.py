"""Contracts that keep the plugin framework honest (pytest's test_meta, datasette's docs tests)."""

from __future__ import annotations

import inspect
import pkgutil
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ovnk.core import hookspecs
from ovnk.core import plugins as plugins_mod

REPO = Path(__file__).resolve().parents[2]


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("ovnk_"))


def signature(name: str) -> str:
    fn = getattr(hookspecs, name)
    annotations = fn.__annotations__
    params = ", ".join(f"{p}: {annotations[p]}" for p in inspect.signature(fn).parameters)
    return f"{name}({params}) -> {annotations['return']}"


def test_every_hookspec_is_documented_with_its_exact_signature() -> None:
    doc = (REPO / "docs" / "hooks.md").read_text()
    headings = set(re.findall(r"^### (ovnk_\w+\(.*\) -> .*)$", doc, re.MULTILINE))
    expected = {signature(name) for name in hook_names()}
    assert expected - headings == set(), "hooks missing from docs/hooks.md (or stale signatures)"
    assert headings - expected == set(), "docs/hooks.md documents hooks that do not exist"


def test_every_hookspec_has_a_full_docstring() -> None:
    for name in hook_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Honoured in" in doc, f"{name}: docstring must say where it is honoured"
        for param in inspect.signature(getattr(hookspecs, name)).parameters:
            assert f":param {param}:" in doc, f"{name}: parameter {param} undocumented"


def test_every_hook_is_exercised_by_a_test() -> None:
    """Each hook has a ``test_hook_...`` test naming it (one scenario may name several hooks)."""
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    tests = re.findall(r"def (test_hook_\w+)\(", sources)
    missing = [name for name in hook_names()
               if not any(re.search(rf"(^|_){name.removeprefix('ovnk_')}(_|$)", t.removeprefix("test_hook_"))
                          for t in tests)]
    assert missing == [], f"hooks without a test_hook_<name> test: {missing}"


def first_party_entry_points() -> list[metadata.EntryPoint]:
    dist = metadata.distribution("ovnk")
    return [ep for ep in dist.entry_points if ep.group == plugins_mod.ENTRY_POINT_GROUP]


def test_first_party_plugins_are_entry_points_named_after_their_directories() -> None:
    folders = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists())
    names = sorted(ep.name for ep in first_party_entry_points())
    assert names == folders
    for ep in first_party_entry_points():
        assert ep.value == f"ovnk.plugins.{ep.name}.plugin"


@pytest.mark.parametrize("name", [ep.name for ep in first_party_entry_points()] or ["(none)"])
def test_first_party_entry_point_loads_and_passes_check_pending(name: str) -> None:
    if name == "(none)":
        pytest.skip("no first-party plugin installed yet")
    pm = plugins_mod.get_plugin_manager(enabled=[name])
    assert name in pm.plugin_names()


def test_core_default_plugins_load_and_pass_check_pending() -> None:
    pm = plugins_mod.get_plugin_manager(enabled=(), discovered={})
    assert [n for n in pm.plugin_names() if n.startswith("core.")] == [
        "core." + module.rsplit(".", 1)[-1] for module in plugins_mod.DEFAULT_PLUGINS
    ]


def all_modules() -> list[str]:
    import ovnk

    names = ["ovnk"]
    for package, path in (("ovnk.core", REPO / "core"), ("ovnk.cni", REPO / "cni"), ("ovnk.plugins", REPO / "plugins"),
                          ("ovnk_lab", REPO / "lab" / "ovnk_lab")):
        names.append(package)
        for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
            names.append(info.name)
    del ovnk
    return sorted(set(names))


def test_every_module_imports_without_warnings() -> None:
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    res = subprocess.run([sys.executable, "-W", "error", "-c", code, *all_modules()], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]


def test_importing_ovnk_and_the_cni_package_is_cheap() -> None:
    code = ("import sys, ovnk, ovnk.cni\n"
            "heavy = [m for m in ('pluggy', 'kubernetes', 'pyroute2', 'ovsdbapp', 'click') if m in sys.modules]\n"
            "print(','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.strip() == ""


def test_the_product_distribution_does_not_contain_the_lab() -> None:
    """The lab is its own distribution (``ovnk-lab``); the product's wheel and image carry none of it."""
    import importlib.util

    assert importlib.util.find_spec("ovnk.core.lab") is None
    files = [str(f) for f in metadata.distribution("ovnk").files or ()]
    assert not [f for f in files if "lab" in f.split("/") or "ovnk_lab" in f], files
    lab = metadata.distribution("ovnk-lab")
    assert [ep.value for ep in lab.entry_points if ep.group == plugins_mod.ENTRY_POINT_GROUP] == ["ovnk_lab.plugin"]


def test_every_core_setting_is_documented() -> None:
    from ovnk.core import config as config_mod
    from ovnk.core.settings import describe

    doc = (REPO / "docs" / "configuration.md").read_text()
    for name, cls in config_mod.CORE_SECTIONS.items():
        assert f"### [{name}]" in doc, f"section [{name}] missing from docs/configuration.md"
        for key, _value, _help in describe(cls()):
            assert f"| `{key}` |" in doc, f"[{name}] {key} missing from docs/configuration.md"


def test_the_public_sdk_resolves_and_every_name_is_documented() -> None:
    """``ovnk`` exports the SDK lazily; each name resolves and has an entry in docs/hooks.md's SDK table."""
    import ovnk
    import ovnk.annotations
    import ovnk.names
    import ovnk.wiring

    doc = (REPO / "docs" / "hooks.md").read_text()
    sdk = doc[doc.index("## The SDK"):]
    documented = set(re.findall(r"^\| `(\w+)`", sdk, re.MULTILINE))
    exported = set(ovnk.__all__) - {"__version__"}
    assert exported == set(ovnk._EXPORTS)
    for name in sorted(exported):
        assert getattr(ovnk, name) is not None, name
    assert exported - documented == set(), "SDK names missing from the SDK table of docs/hooks.md"
    assert documented - exported - {"names", "annotations", "wiring"} == set(), "docs/hooks.md documents SDK names that do not exist"
    for module in (ovnk.names, ovnk.annotations, ovnk.wiring):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_third_party_example_uses_only_the_public_sdk() -> None:
    example = REPO / "tests" / "thirdparty" / "ovnk-hello"
    for path in example.rglob("*.py"):
        text = path.read_text()
        assert "ovnk.core" not in text and "ovnk.cni" not in text, f"{path} reaches into a private module"


def test_the_walkthrough_in_docs_is_the_example_plugins_code() -> None:
    """Every python block of docs/hooks.md's "Writing a plugin" is an excerpt of ovnk-hello's plugin.py."""
    doc = (REPO / "docs" / "hooks.md").read_text()
    section = doc[doc.index("## Writing a plugin"):doc.index("## Which planned plugin uses which hook")]
    source = (REPO / "tests" / "thirdparty" / "ovnk-hello" / "ovnk_hello" / "plugin.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 8
    for block in blocks:
        assert block in source, f"docs/hooks.md shows code that is not in ovnk-hello:\n{block}"
