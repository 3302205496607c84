"""Pure parts of ovnk.cni.portable: which modules the shim imports, the launcher, the install marker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ovnk.cni import install
from ovnk.cni import portable


def test_shim_imports_every_module_but_type_checking_ones() -> None:
    source = '''
from __future__ import annotations
import os, sys
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO
    import collections.abc
def codec():
    try:
        from _json import make_scanner
    except ImportError:
        import json
    from . import sibling
'''
    assert portable.shim_imports(source) == ["__future__", "_json", "json", "os", "sys"]


def test_the_real_shims_imports_include_its_fallbacks() -> None:
    names = portable.shim_imports(install.SHIM_SOURCE.read_text())
    assert {"_json", "json", "_socket", "socket", "os", "sys"} <= set(names)
    assert "typing" not in names  # only under TYPE_CHECKING


def test_launcher_quotes_paths_and_passes_arguments() -> None:
    layout = portable.InterpreterFiles(executable="bin/python3.11", files={}, libraries={},
                                       loader="ld/ld-linux-x86-64.so.2", directories=())
    text = portable.launcher_script("/opt/cni bin/ovnk-python", layout)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[-1] == ("exec '/opt/cni bin/ovnk-python/ld/ld-linux-x86-64.so.2' --library-path "
                         "'/opt/cni bin/ovnk-python/ld' '/opt/cni bin/ovnk-python/bin/python3.11' \"$@\"")


def test_installed_launcher_needs_a_complete_executable_tree(tmp_path: Path) -> None:
    bin_dir = str(tmp_path)
    assert portable.installed_launcher(bin_dir) is None
    root = Path(portable.portable_dir(bin_dir))
    root.mkdir()
    launcher = root / portable.LAUNCHER_NAME
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert portable.installed_launcher(bin_dir) is None  # no completion marker: an interrupted copy
    (root / portable.COMPLETE_MARKER).write_text("")
    assert portable.installed_launcher(bin_dir) == str(launcher)
    assert install.shim_interpreter(bin_dir) == str(launcher)
    launcher.chmod(stat.S_IMODE(launcher.stat().st_mode) & ~0o111)
    assert portable.installed_launcher(bin_dir) is None
    assert os.path.basename(portable.launcher_path(bin_dir)) == "python3"
