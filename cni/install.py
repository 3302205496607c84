"""Install the CNI shim as a standalone executable in the CNI bin directory.

Two shims do the same job (the functional tests run both):

* ``native`` (the default): ``native/shim.c`` compiled statically by
  ``ovnk cni build-shim`` into ``<sys.prefix>/libexec/ovnk/`` (the setup script
  and the image build do this). It starts in well under a millisecond and the
  host needs nothing else. The installed copy has the configured socket path
  written into its socket slot.
* ``python``: ``shim.py``'s own source with two lines changed: the shebang names
  the node agent's interpreter (or the portable copy of it that
  :mod:`ovnk.cni.portable` installs for hosts without one) with ``-IS``
  (isolated mode, no ``site``), and ``DEFAULT_SOCKET_PATH`` holds the
  configured socket.

The file is replaced atomically and only when its content changes, so a runtime
executing the shim never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from ovnk.cni.portable import installed_launcher
from ovnk.core.config import CniSettings

logger = logging.getLogger(__name__)

SHIM_SOURCE = Path(__file__).with_name("shim.py")
NATIVE_SOURCE = Path(__file__).with_name("native") / "shim.c"
NATIVE_CFLAGS = ("-O2", "-static", "-Wall", "-Wextra")

# The installer writes the socket path after this marker in the native binary (see shim.c).
_NATIVE_SOCKET_MARKER = b"ovnk-socket-path="
_NATIVE_SOCKET_SLOT = 108

ShimKind = Literal["native", "python"]

# Linux reads at most 127 bytes of a shebang line on older kernels (BINPRM_BUF_SIZE 128)
# and truncates silently; fail loudly instead.
_MAX_SHEBANG = 127
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

_SOCKET_LINE = re.compile(r'^DEFAULT_SOCKET_PATH = .*  # ovnk-install: socket path$', re.MULTILINE)


def check_socket_path(socket_path: str) -> None:
    """Raise ``ValueError`` unless ``socket_path`` is absolute and fits a unix socket address."""
    if not os.path.isabs(socket_path):
        raise ValueError(f"CNI socket path {socket_path!r} must be absolute")
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise ValueError(f"CNI socket path {socket_path!r} is longer than {MAX_SOCKET_PATH} bytes")


def shim_source(*, python: str, socket_path: str) -> str:
    """``shim.py``'s source with ``python`` in the shebang and ``socket_path`` as its default socket."""
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        # A shebang splits at the first blank and passes the rest as one argument.
        raise ValueError(f"interpreter {python!r} must be an absolute path without blanks")
    check_socket_path(socket_path)
    shebang = f"#!{python} -IS"
    if len(os.fsencode(shebang)) > _MAX_SHEBANG:
        raise ValueError(f"shebang {shebang!r} is longer than {_MAX_SHEBANG} bytes; use a shorter interpreter path")
    source = SHIM_SOURCE.read_text(encoding="utf-8")
    first, _, rest = source.partition("\n")
    if not first.startswith("#!"):
        raise RuntimeError(f"{SHIM_SOURCE} does not start with a shebang line")
    # repr() of a str is a valid Python literal for any path.
    line = f"DEFAULT_SOCKET_PATH = {socket_path!r}  # ovnk-install: socket path"
    rest, count = _SOCKET_LINE.subn(lambda _match: line, rest)
    if count != 1:
        raise RuntimeError(f"{SHIM_SOURCE} must hold exactly one marked DEFAULT_SOCKET_PATH line, found {count}")
    return f"{shebang}\n{rest}"


def native_shim_binary() -> Path:
    """Where ``ovnk cni build-shim`` puts the compiled shim: ``<sys.prefix>/libexec/ovnk/``."""
    return Path(sys.prefix) / "libexec" / "ovnk" / "ovnk-cni-shim"


def _native_build_key(cc: str) -> str:
    source = NATIVE_SOURCE.read_bytes()
    return hashlib.sha256(source + " ".join((cc, *NATIVE_CFLAGS)).encode()).hexdigest()


def build_native_shim(dest: Path | None = None, *, cc: str = "gcc") -> Path:
    """Compile ``native/shim.c`` statically into ``dest`` (default :func:`native_shim_binary`).

    Skipped when ``dest`` was built from the same source with the same flags
    (a ``.sha256`` file beside it records that). Raises ``RuntimeError`` with
    the compiler's output if the build fails.
    """
    target = dest or native_shim_binary()
    key = _native_build_key(cc)
    stamp = target.with_name(target.name + ".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return target
    compiler = shutil.which(cc)
    if compiler is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (install gcc and libc6-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    proc = subprocess.run([compiler, *NATIVE_CFLAGS, "-o", str(tmp), str(NATIVE_SOURCE)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{cc} failed to build {NATIVE_SOURCE}:\n{proc.stderr.strip()}")
    subprocess.run(["strip", str(tmp)], capture_output=True, check=False)
    tmp.replace(target)
    stamp.write_text(key + "\n")
    return target


def native_shim_content(*, socket_path: str, binary: Path | None = None) -> bytes:
    """The compiled shim's bytes with ``socket_path`` in its socket slot."""
    check_socket_path(socket_path)
    source = binary or native_shim_binary()
    try:
        content = bytearray(source.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the native CNI shim is not built ({source} is missing): run `ovnk cni build-shim` "
            "(needs gcc) or set [cni] shim = python"
        ) from None
    at = content.find(_NATIVE_SOCKET_MARKER)
    if at < 0 or content.find(_NATIVE_SOCKET_MARKER, at + 1) >= 0:
        raise RuntimeError(f"{source} must hold exactly one socket slot")
    start = at + len(_NATIVE_SOCKET_MARKER)
    path = os.fsencode(socket_path)
    content[start:start + _NATIVE_SOCKET_SLOT] = path + b"\0" * (_NATIVE_SOCKET_SLOT - len(path))
    return bytes(content)


def install_shim(
    dest: str, *, socket_path: str, kind: ShimKind = "native", python: str = sys.executable,
    native_binary: Path | None = None,
) -> None:
    """Write the shim of ``kind`` to ``dest`` (mode 0755) unless an identical file is already there."""
    if kind == "native":
        content = native_shim_content(socket_path=socket_path, binary=native_binary)
    else:
        content = shim_source(python=python, socket_path=socket_path).encode("utf-8")
    target = Path(dest)
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    if current == content:
        if stat.S_IMODE(target.stat().st_mode) != 0o755:
            os.chmod(target, 0o755)
        logger.debug("CNI shim %s is up to date", target)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(content)
            tmp.flush()
            os.fchmod(tmp.fileno(), 0o755)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        os.unlink(tmp_name)
        raise
    logger.info("installed the %s CNI shim %s (socket %s%s)", kind, target, socket_path,
                f", interpreter {python}" if kind == "python" else "")


def shim_path(settings: CniSettings) -> str:
    """Where the shim is installed: ``[cni] bin-dir``/``[cni] plugin``."""
    return os.path.join(settings.bin_dir, settings.plugin)


def shim_interpreter(bin_dir: str) -> str:
    """The interpreter for a shim in ``bin_dir``: the portable copy if one is installed there, else ours.

    ``ovnk cni install --portable-python`` (the Helm chart's init step) puts a
    copy of the interpreter into ``<bin_dir>/ovnk-python`` because the host has
    none of its own; a later install (the node agent's, at every start) must keep
    naming that copy, not the container's interpreter, which the host cannot run.
    """
    return installed_launcher(bin_dir) or sys.executable


def install_configured_shim(settings: CniSettings, *, python: str | None = None) -> str:
    """Install the shim as configured in ``[cni]`` (``shim`` says which); return its path.

    ``python`` (for the Python shim) defaults to :func:`shim_interpreter` of ``[cni] bin-dir``.
    """
    dest = shim_path(settings)
    install_shim(dest, kind=settings.shim, python=python or shim_interpreter(settings.bin_dir),
                 socket_path=settings.socket_path)
    return dest
