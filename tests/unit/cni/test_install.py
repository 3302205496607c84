"""install_shim: the standalone shim file written into the CNI bin directory."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from ovnk.cni import install
from ovnk.core.config import CniSettings

SOCKET = "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock"


def test_shim_source_sets_shebang_and_socket_and_keeps_the_rest() -> None:
    source = install.shim_source(python="/usr/bin/python3.11", socket_path="/run/ovnk/it's.sock")
    original = install.SHIM_SOURCE.read_text()
    lines, original_lines = source.splitlines(), original.splitlines()
    # -I -S as one combined flag: Linux passes everything after the interpreter as ONE argument.
    assert lines[0] == "#!/usr/bin/python3.11 -IS"
    changed = [i for i, (a, b) in enumerate(zip(lines, original_lines, strict=True)) if a != b]
    assert len(changed) == 2
    assert lines[changed[1]] == 'DEFAULT_SOCKET_PATH = "/run/ovnk/it\'s.sock"  # ovnk-install: socket path'
    namespace: dict[str, object] = {}
    exec(compile(source, "shim", "exec"), namespace)
    assert namespace["DEFAULT_SOCKET_PATH"] == "/run/ovnk/it's.sock"


@pytest.mark.parametrize(
    ("python", "socket_path", "fragment"),
    [
        ("python3", SOCKET, "must be an absolute path without blanks"),
        ("/opt/my python/bin/python", SOCKET, "must be an absolute path without blanks"),
        ("/" + "p" * 130, SOCKET, "is longer than 127 bytes"),
        ("/usr/bin/python3", "relative.sock", "must be absolute"),
        ("/usr/bin/python3", "/" + "s" * 120, "is longer than 107 bytes"),
    ],
)
def test_shim_source_rejects_what_would_break_at_exec_or_connect(python: str, socket_path: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        install.shim_source(python=python, socket_path=socket_path)


def test_install_shim_writes_executable_file(tmp_path: Path) -> None:
    dest = tmp_path / "bin" / "ovn-k8s-cni-overlay"
    install.install_shim(str(dest), kind="python", socket_path=SOCKET)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert dest.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert os.listdir(dest.parent) == ["ovn-k8s-cni-overlay"]  # no temp file left behind


def test_install_shim_rewrites_only_on_change(tmp_path: Path) -> None:
    dest = tmp_path / "ovn-k8s-cni-overlay"
    install.install_shim(str(dest), kind="python", socket_path=SOCKET)
    first = dest.stat()
    install.install_shim(str(dest), kind="python", socket_path=SOCKET)
    assert dest.stat().st_ino == first.st_ino  # untouched: not even replaced by an identical copy
    install.install_shim(str(dest), kind="python", socket_path="/run/other.sock")
    assert dest.stat().st_ino != first.st_ino  # replaced by rename, never rewritten in place
    assert "/run/other.sock" in dest.read_text()
    assert os.listdir(tmp_path) == ["ovn-k8s-cni-overlay"]


def test_install_shim_repairs_mode_of_identical_file(tmp_path: Path) -> None:
    dest = tmp_path / "ovn-k8s-cni-overlay"
    install.install_shim(str(dest), kind="python", socket_path=SOCKET)
    os.chmod(dest, 0o600)
    install.install_shim(str(dest), kind="python", socket_path=SOCKET)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_install_configured_shim_uses_bin_dir_and_plugin_name(tmp_path: Path) -> None:
    settings = CniSettings(bin_dir=str(tmp_path), socket_path="/run/ovnk-test/cni.sock", shim="python")
    path = install.install_configured_shim(settings, python="/usr/bin/python3")
    assert path == str(tmp_path / "ovn-k8s-cni-overlay") == install.shim_path(settings)
    text = Path(path).read_text()
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "DEFAULT_SOCKET_PATH = '/run/ovnk-test/cni.sock'  # ovnk-install: socket path" in text
