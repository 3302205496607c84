"""ovnk: OVN-Kubernetes rebuilt in Python as a plugin framework.

This module is the public API for plugin authors. It is deliberately lazy:
the CNI shim imports ``ovnk.cni.shim`` on every pod start, and importing this
package must not pull in pluggy, kubernetes or ovsdbapp. Names are resolved on
first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "hookimpl": ("ovnk.core.hookspecs", "hookimpl"),
    "hookspec": ("ovnk.core.hookspecs", "hookspec"),
    "ConfigError": ("ovnk.core.errors", "ConfigError"),
    "PluginError": ("ovnk.core.errors", "PluginError"),
    "TemporaryError": ("ovnk.core.errors", "TemporaryError"),
    "PermanentError": ("ovnk.core.errors", "PermanentError"),
    "setting": ("ovnk.core.settings", "setting"),
    "OwnerType": ("ovnk.core.ovn.ids", "OwnerType"),
    "ControllerSpec": ("ovnk.core.reconcile.spec", "ControllerSpec"),
    "Resource": ("ovnk.core.kube.resources", "Resource"),
    "command_settings": ("ovnk.core.cli", "command_settings"),
}

__all__ = [
    "ConfigError",
    "ControllerSpec",
    "OwnerType",
    "PermanentError",
    "PluginError",
    "Resource",
    "TemporaryError",
    "__version__",
    "command_settings",
    "hookimpl",
    "hookspec",
    "setting",
]

if TYPE_CHECKING:
    from ovnk.core.cli import command_settings as command_settings
    from ovnk.core.errors import ConfigError as ConfigError
    from ovnk.core.errors import PermanentError as PermanentError
    from ovnk.core.errors import PluginError as PluginError
    from ovnk.core.errors import TemporaryError as TemporaryError
    from ovnk.core.hookspecs import hookimpl as hookimpl
    from ovnk.core.hookspecs import hookspec as hookspec
    from ovnk.core.kube.resources import Resource as Resource
    from ovnk.core.ovn.ids import OwnerType as OwnerType
    from ovnk.core.reconcile.spec import ControllerSpec as ControllerSpec
    from ovnk.core.settings import setting as setting


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ovnk' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
