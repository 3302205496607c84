"""A self-contained copy of the Python interpreter for the CNI shim on a host.

The container runtime executes the CNI shim on the host, outside any container,
so the interpreter in its shebang must exist on the host. When ovnk runs in a
container (the Helm chart), the host has no such interpreter; this module copies
the container's own one into ``<[cni] bin-dir>/ovnk-python`` (``ovnk cni install
--portable-python``):

* the interpreter binary, at the same path relative to its prefix as in the
  source installation (``bin/python3.11``), so its start-up finds the copied
  standard library through the usual landmarks (``lib/python3.11/os.py`` and
  ``lib/python3.11/lib-dynload``);
* from the standard library only what the shim needs: every module a bare
  ``python -I -S`` loads at start (``encodings`` in full, since the runtime's
  locale decides which codec is used) and every module the shim's source imports,
  including the fallbacks it uses when a C accelerator is missing, plus their
  imports; byte-compiled so no run ever writes a ``__pycache__``;
* the shared libraries of the binary and of the copied extension modules, the
  C library and its dynamic loader included (found with ``ldd``), so the copy
  depends neither on the host's libraries nor on its glibc version;
* a ``python3`` launcher, a ``/bin/sh`` script that runs the copied binary through
  the copied loader with ``--library-path`` pointing at the copied libraries.
  The shim's shebang names this launcher (Linux runs a script as the interpreter
  of a script). The host therefore needs ``/bin/sh`` and nothing else.

Updates are atomic: the files go into ``ovnk-python-<content hash>`` and
``ovnk-python`` is a symlink switched with one ``rename``; everything refers to
the symlink, so a shim that is running during an upgrade finds a complete tree
either way. An identical copy is left alone (nothing written), and older trees
are removed.

The paths inside the launcher are absolute, so the directory must have the same
path in the installing container as on the host (mount the host's CNI bin
directory at ``[cni] bin-dir``).
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PORTABLE_DIR_NAME = "ovnk-python"
LAUNCHER_NAME = "python3"
LIBRARY_DIR = "ld"
# Written last into a finished tree: a tree without it is an interrupted copy.
COMPLETE_MARKER = ".complete"

_TIMEOUT = 120

# Runs inside the interpreter being copied, with -I -S, so that sys.modules holds
# what a bare start loads plus what the shim imports. It imports nothing itself
# (repr instead of json) and prints one Python literal.
_PROBE = """
import sys, os
missing = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
import encodings
print(repr({
    "executable": os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable),
    "prefix": sys.base_prefix,
    "exec_prefix": sys.base_exec_prefix,
    "stdlib": getattr(sys, "_stdlib_dir", None) or os.path.dirname(os.__file__),
    "path": [p for p in sys.path if not p.endswith(".zip")],
    "encodings": os.path.dirname(encodings.__file__),
    "files": files,
    "missing": missing,
}))
"""


class PortablePythonError(Exception):
    """The interpreter cannot be copied (the message says what is missing)."""


@dataclass(frozen=True)
class InterpreterFiles:
    """What the copied tree consists of: source path -> path relative to the tree."""

    executable: str  # relative path of the binary inside the tree (bin/python3.11)
    files: dict[str, str]  # standard library and binary: relative destination -> source
    libraries: dict[str, str]  # shared libraries and the loader: relative destination -> source
    loader: str  # relative path of the dynamic loader inside the tree
    directories: tuple[str, ...]  # relative directories that must exist (start-up landmarks)


def portable_dir(bin_dir: str) -> str:
    """Where ``ovnk cni install --portable-python`` puts the interpreter: ``<bin_dir>/ovnk-python``."""
    return os.path.join(bin_dir, PORTABLE_DIR_NAME)


def launcher_path(bin_dir: str) -> str:
    """The path a shim's shebang names when the portable interpreter is used."""
    return os.path.join(portable_dir(bin_dir), LAUNCHER_NAME)


def installed_launcher(bin_dir: str) -> str | None:
    """The launcher in ``bin_dir`` if a complete portable interpreter is installed there."""
    root = portable_dir(bin_dir)
    launcher = os.path.join(root, LAUNCHER_NAME)
    if os.path.exists(os.path.join(root, COMPLETE_MARKER)) and os.access(launcher, os.X_OK):
        return launcher
    return None


def shim_imports(source: str) -> list[str]:
    """Every module ``source`` imports, at any depth, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                skipped.update(id(inner) for inner in ast.walk(statement))
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return sorted(set(names))


def _relative_to_prefix(path: str, prefixes: list[str]) -> str:
    for prefix in prefixes:
        rel = os.path.relpath(path, prefix)
        if not rel.startswith(".."):
            return rel
    raise PortablePythonError(f"{path} is outside the interpreter's prefix ({', '.join(prefixes)})")


def _probe(python: str, modules: list[str]) -> dict[str, object]:
    try:
        proc = subprocess.run(
            [python, "-I", "-S", "-c", _PROBE, *modules],
            capture_output=True, text=True, timeout=_TIMEOUT, check=False, env={},
        )
    except OSError as exc:
        raise PortablePythonError(f"cannot run {python}: {exc}") from None
    if proc.returncode != 0:
        raise PortablePythonError(f"{python} -I -S failed: {proc.stderr.strip()}")
    result = ast.literal_eval(proc.stdout.strip())
    if not isinstance(result, dict):
        raise PortablePythonError(f"unexpected probe output from {python}: {proc.stdout!r}")
    return result


def shared_libraries(binary: str) -> tuple[list[str], str | None]:
    """``(libraries, loader)`` that ``binary`` loads, from ``ldd`` (the vDSO excluded)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise PortablePythonError("ldd is not installed (Debian: libc-bin); it lists the libraries to copy")
    proc = subprocess.run([ldd, binary], capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return [], None
        raise PortablePythonError(f"ldd {binary} failed: {(proc.stderr or proc.stdout).strip()}")
    libraries: list[str] = []
    loader: str | None = None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            path = rest.strip().split(" (", 1)[0].strip()
            if path == "not found":
                raise PortablePythonError(f"{binary} needs {name.strip()}, which is not installed")
            if path:
                libraries.append(path)
        elif line.startswith("/"):
            loader = line.split(" (", 1)[0]
    return libraries, loader


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        raise PortablePythonError(f"unexpected probe value {value!r}")
    return [str(item) for item in value]


def interpreter_files(python: str = sys.executable, *, shim_source: str) -> InterpreterFiles:
    """Work out which files make up the portable copy of ``python`` for the shim ``shim_source``."""
    probe = _probe(python, shim_imports(shim_source))
    executable = str(probe["executable"])
    prefixes = [str(probe["prefix"]), str(probe["exec_prefix"])]
    stdlib = str(probe["stdlib"])
    if probe["missing"]:
        # The shim has fallbacks for its C accelerators; what is absent here is absent there too.
        logger.debug("%s lacks modules the shim may import: %s", python, probe["missing"])
    wanted = _strings(probe["files"])
    wanted.append(os.path.join(stdlib, "os.py"))  # start-up landmark of the prefix
    wanted.extend(str(p) for p in sorted(Path(str(probe["encodings"])).glob("*.py")))
    files: dict[str, str] = {}
    for source in wanted:
        if source.endswith(".pyc"):
            continue  # the .py beside it is copied and compiled afresh
        files[_relative_to_prefix(source, prefixes)] = source
    binary_rel = _relative_to_prefix(executable, prefixes)
    files[binary_rel] = executable
    libraries: dict[str, str] = {}
    loader_rel = ""
    for binary in [executable, *(f for f in files.values() if f.endswith(".so"))]:
        libs, loader = shared_libraries(binary)
        for lib in libs:
            libraries[os.path.join(LIBRARY_DIR, os.path.basename(lib))] = os.path.realpath(lib)
        if loader:
            loader_rel = os.path.join(LIBRARY_DIR, os.path.basename(loader))
            libraries[loader_rel] = os.path.realpath(loader)
    if not loader_rel:
        raise PortablePythonError(f"{executable} is not dynamically linked; nothing to run it with")
    # sys.path of a bare start: lib/python3.X and lib/python3.X/lib-dynload are the landmarks
    # the copied interpreter finds its prefix by; they must exist even when empty.
    directories = tuple(sorted(_relative_to_prefix(p, prefixes) for p in _strings(probe["path"]) if os.path.isdir(p)))
    return InterpreterFiles(executable=binary_rel, files=files, libraries=libraries, loader=loader_rel,
                            directories=directories)


def launcher_script(root: str, layout: InterpreterFiles) -> str:
    """The ``/bin/sh`` launcher that runs the copied interpreter in ``root`` (the symlink path)."""
    loader = shlex.quote(os.path.join(root, layout.loader))
    libs = shlex.quote(os.path.join(root, LIBRARY_DIR))
    binary = shlex.quote(os.path.join(root, layout.executable))
    return (
        "#!/bin/sh\n"
        "# Written by `ovnk cni install --portable-python`: the interpreter copied here, run through\n"
        "# the C library copied beside it, so the CNI shim does not depend on the host's libraries.\n"
        f'exec {loader} --library-path {libs} {binary} "$@"\n'
    )


def _digest(layout: InterpreterFiles, launcher: str) -> str:
    digest = hashlib.sha256(launcher.encode())
    for rel, source in sorted({**layout.files, **layout.libraries}.items()):
        digest.update(rel.encode() + b"\0")
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    for rel in layout.directories:
        digest.update(b"dir:" + rel.encode() + b"\0")
    return digest.hexdigest()[:16]


def _copy_tree(python: str, tree: Path, layout: InterpreterFiles, launcher: str) -> None:
    for rel in layout.directories:
        (tree / rel).mkdir(parents=True, exist_ok=True)
    for rel, source in {**layout.files, **layout.libraries}.items():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # copy2 keeps the mtime the byte-compiled files are validated against.
        shutil.copy2(source, target, follow_symlinks=True)
    for rel in {layout.executable, layout.loader}:
        os.chmod(tree / rel, 0o755)
    sources = [str(tree / rel) for rel in layout.files if rel.endswith(".py")]
    proc = subprocess.run(
        [python, "-I", "-S", "-m", "py_compile", *sources],
        capture_output=True, text=True, timeout=_TIMEOUT, check=False, env={},
    )
    if proc.returncode != 0:
        raise PortablePythonError(f"byte-compiling the copied standard library failed: {proc.stderr.strip()}")
    launcher_file = tree / LAUNCHER_NAME
    launcher_file.write_text(launcher, encoding="utf-8")
    os.chmod(launcher_file, 0o755)
    (tree / COMPLETE_MARKER).write_text("", encoding="utf-8")


def install_portable_python(bin_dir: str, *, python: str = sys.executable, shim_source: str) -> str:
    """Install (or keep) the portable interpreter under ``bin_dir``; return the launcher path.

    :param bin_dir: the CNI bin directory (the same path on the host as here).
    :param python: the interpreter to copy (default: the running one, its base
        installation when it is a venv).
    :param shim_source: source of the shim that will run on it (decides the modules copied).
    :raises PortablePythonError: something needed is missing; nothing current was changed.
    """
    root = portable_dir(bin_dir)
    layout = interpreter_files(python, shim_source=shim_source)
    launcher = launcher_script(root, layout)
    name = f"{PORTABLE_DIR_NAME}-{_digest(layout, launcher)}"
    base = Path(bin_dir)
    base.mkdir(parents=True, exist_ok=True)
    tree = base / name
    link = Path(root)
    if link.is_symlink() and os.readlink(link) == name and (tree / COMPLETE_MARKER).exists():
        logger.debug("portable interpreter %s is up to date", tree)
        return os.path.join(root, LAUNCHER_NAME)
    if link.exists() and not link.is_symlink():
        raise PortablePythonError(f"{link} exists and is not a symlink; remove it")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
    try:
        _copy_tree(python, staging, layout, launcher)
        os.chmod(staging, 0o755)
        if tree.exists():
            shutil.rmtree(tree)  # an interrupted earlier copy (no marker)
        os.rename(staging, tree)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    temp_link = base / f".{PORTABLE_DIR_NAME}.{os.getpid()}"
    if temp_link.is_symlink() or temp_link.exists():
        temp_link.unlink()
    os.symlink(name, temp_link)
    os.replace(temp_link, link)
    for old in base.glob(f"{PORTABLE_DIR_NAME}-*"):
        if old.name != name and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    logger.info("installed portable interpreter %s from %s", tree, python)
    return os.path.join(root, LAUNCHER_NAME)

