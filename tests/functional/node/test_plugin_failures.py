"""The node side of the failure rule: a plugin hook that raises during start-up stops the agent with a
message naming the plugin and the hook (exit status, log line, Warning event on the Node)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core.kube.resources import EVENTS
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode

from .conftest import AGENT_SETTINGS
from .conftest import install_plugin
from .conftest import restart_agent
from .conftest import shim_status

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

PLUGIN = "testfail"
# Which hook raises comes from the agent's environment.
PLUGIN_SOURCE = '''
"""Raises in the hook named by OVNK_TESTFAIL_HOOK."""

import os

from ovnk import hookimpl


def _maybe_fail(hook):
    if os.environ.get("OVNK_TESTFAIL_HOOK") == hook:
        raise RuntimeError(f"{hook} cannot go on")


@hookimpl
def ovnk_node_setup(ctx):
    _maybe_fail("ovnk_node_setup")


@hookimpl
def ovnk_node_annotations(ctx, annotations):
    _maybe_fail("ovnk_node_annotations")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("testfail-site")
    install_plugin(path, name=PLUGIN, source=PLUGIN_SOURCE)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("hook", ["ovnk_node_setup", "ovnk_node_annotations"])
def test_a_start_up_hook_that_raises_stops_the_agent_naming_the_plugin(lab: NodeLab, node2: OvsNode, site: Path,
                                                                       hook: str) -> None:
    assert lab.client is not None
    lab.stop_agent(node2)
    try:
        agent = lab.start_agent(node2, *AGENT_SETTINGS, plugins=(PLUGIN,), wait=False,
                                env={"PYTHONPATH": str(site), "OVNK_TESTFAIL_HOOK": hook})
        assert agent.proc is not None
        assert agent.proc.wait(timeout=90) != 0
        message = f"plugin '{PLUGIN}' failed in {hook}: RuntimeError: {hook} cannot go on"
        assert message in node2.agent_log.read_text()
        events = lab.client.list(EVENTS, namespace="default", field_selector="involvedObject.name=node-2")[0]
        assert any(e["reason"] == "NodeAgentStartFailed" and message in e["message"] for e in events)
        lab.stop_agent(node2)
    finally:
        restart_agent(lab, node2)
    assert shim_status(node2).returncode == 0
