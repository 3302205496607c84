"""The controller process does not import node-only code (issue 22: RSS).

pyroute2 alone is ~240 modules and ~14 MB of RSS; the controller loads the same
default plugins as the node agent (their node hooks never run there), so those
plugins import node code only where a node hook needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

# What ``python -m ovnk controller`` imports before it runs: the CLI with every command registered,
# the controller module and the runtime with the default plugins configured.
_CONTROLLER_IMPORTS = """
import json, sys
from ovnk.core import cli
cli._register_process_commands()
from ovnk.core import controller
from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
runtime = bootstrap(ConfigInputs(env={}))
plugins = sorted(name for name, _ in runtime.pm.list_name_plugin())
print(json.dumps({"plugins": plugins, "modules": sorted(sys.modules)}))
"""


def _controller_modules() -> tuple[list[str], set[str]]:
    done = subprocess.run([sys.executable, "-c", _CONTROLLER_IMPORTS], check=False, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "OVNK_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["plugins"], set(found["modules"])


def test_the_controller_process_does_not_import_pyroute2_or_node_code() -> None:
    plugins, modules = _controller_modules()
    # The default plugins with node hooks are loaded (else this would prove nothing).
    assert {"core.cni", "core.services"} <= set(plugins)
    assert "pyroute2" not in modules
    assert sorted(m for m in modules if m.startswith("ovnk.core.node.")) == []


def test_node_code_is_still_reachable_from_the_plugins_that_need_it() -> None:
    from ovnk.core.builtin import services
    from ovnk.core.builtin.cni import ovnk_cni_interface_driver
    from ovnk.core.builtin.services.nodeport import NodePortSteering
    from ovnk.core.node.wiring import VethDriver

    assert services.NodePortSteering is NodePortSteering
    driver = ovnk_cni_interface_driver(ctx=None, request=None, network=None)  # type: ignore[arg-type]
    assert isinstance(driver, VethDriver)
    assert ovnk_cni_interface_driver(ctx=None, request=None, network=None) is driver  # type: ignore[arg-type]
