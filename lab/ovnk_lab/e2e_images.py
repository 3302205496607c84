"""The images Kubernetes' own e2e suite asks for, built locally (nothing is pulled).

``e2e.test`` names its images itself (``test/utils/image/manifest.go`` of the
1.20 source); the network specs need these, which are built here under exactly
those names and imported into every sandbox node by ``ovnk sandbox
conformance`` (:func:`import_into`), with :mod:`ovnk_lab.images`' OCI writer:

- :data:`AGNHOST` — the suite's workhorse: our ``agnhost`` (built from the same
  source by ``hack/build-kube-e2e.sh``; upstream's image is Alpine with a few
  tools) at ``/agnhost`` (entrypoint, default command ``pause``), Debian's
  static busybox for the coreutils, and from the host, with their shared
  libraries: ``curl``, OpenBSD ``nc`` (the specs run ``nc -u``, which busybox's
  nc lacks), ``bash`` (also ``/bin/sh``: busybox's sh would run its own applets
  before anything on PATH), ``ip``, ``ss``, ``conntrack`` and GNU ``wget``
  (the specs run ``wget -T``, with which busybox 1.35's wget crashes).
- :data:`BUSYBOX` — busybox 1.29 by name; Debian's busybox-static by content.
- :data:`PAUSE` — the suite's name for the pause image (the sandbox's own is
  :data:`ovnk_lab.images.PAUSE_IMAGE`; same binary).
- :data:`NGINX` — specs only need a web server on port 80 there: agnhost's
  ``netexec`` serving HTTP on 80.
- :data:`REGRESSION_74839` — the conntrack INVALID-packet spec's server, built
  from its source in the same tree, behind :data:`BOOM_SERVER` (image 1.0's behaviour).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from pathlib import PurePosixPath

from ovnk.core.errors import StartupError
from ovnk_lab import images
from ovnk_lab import paths
from ovnk_lab.images import ImageSpec
from ovnk_lab.images import LayerEntry
from ovnk_lab.procs import run

AGNHOST = "k8s.gcr.io/e2e-test-images/agnhost:2.21"
BUSYBOX = "docker.io/library/busybox:1.29"
PAUSE = "k8s.gcr.io/pause:3.2"
NGINX = "docker.io/library/nginx:1.14-alpine"
REGRESSION_74839 = "gcr.io/kubernetes-e2e-test-images/regression-issue-74839-amd64:1.0"
E2E_IMAGES = (AGNHOST, BUSYBOX, PAUSE, NGINX, REGRESSION_74839)

#: Host programs the agnhost image carries (found on PATH, placed in /usr/bin).
AGNHOST_TOOLS = ("curl", "nc", "bash", "ip", "ss", "conntrack", "wget")
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(output: str) -> list[str]:
    """The absolute paths of the shared objects ``ldd`` lists (the dynamic loader included).

    ``linux-vdso.so.1`` (no file) and ``not found`` lines are skipped; a missing library is
    reported by :func:`shared_libraries`.
    """
    found: list[str] = []
    for line in output.splitlines():
        match = _LDD_LINE.match(line)
        if match and match.group(2) not in found:
            found.append(match.group(2))
    return found


def image_path(host_path: str) -> str:
    """Where a host library goes in the image: merged-/usr layout (``/lib/x`` -> ``usr/lib/x``)."""
    pure = PurePosixPath(host_path)
    parts = pure.parts[1:]
    if parts and parts[0] in ("lib", "lib64", "lib32", "libx32"):
        parts = ("usr", *parts)
    return str(PurePosixPath(*parts))


def shared_libraries(program: str) -> list[str]:
    """Shared objects ``program`` loads, per ``ldd`` (none for a static program)."""
    result = run([paths.system_bin("ldd"), program], check=False)
    if "not a dynamic executable" in (result.stdout + result.stderr):
        return []
    missing = [line.strip() for line in result.stdout.splitlines() if "not found" in line]
    if result.returncode != 0 or missing:
        raise StartupError(f"cannot list the libraries of {program}: {missing or result.stderr.strip()}")
    return parse_ldd(result.stdout)


def host_tool_entries(tools: Iterable[str]) -> list[LayerEntry]:
    """``usr/bin/<tool>`` for each host tool, plus every shared library they need (merged-/usr paths)."""
    entries: list[LayerEntry] = []
    libraries: dict[str, Path] = {}
    for tool in tools:
        program = paths.system_bin(tool)
        entries.append(LayerEntry(f"usr/bin/{tool}", source=Path(program).resolve()))
        for library in shared_libraries(program):
            libraries.setdefault(image_path(library), Path(library).resolve())
    # Directories of the merged-/usr layout: /lib and /lib64 point into /usr as on Debian.
    dirs = sorted({str(PurePosixPath(p).parent) for p in libraries})
    for directory in _with_parents(dirs):
        entries.append(LayerEntry(directory, mode=0o755))
    entries += [LayerEntry("lib", symlink="usr/lib"), LayerEntry("lib64", symlink="usr/lib64")]
    entries += [LayerEntry(path, source=source) for path, source in sorted(libraries.items())]
    return entries


def _with_parents(dirs: Sequence[str]) -> list[str]:
    out: list[str] = []
    for directory in dirs:
        pure = PurePosixPath(directory)
        for parent in [*reversed(pure.parents), pure]:
            text = str(parent)
            if text not in (".", "usr") and text not in out:
                out.append(text)
    return out


def without(entries: Sequence[LayerEntry], names: Iterable[str]) -> list[LayerEntry]:
    """``entries`` minus busybox applets named like ``names`` (a real program replaces them)."""
    drop = set(names)
    return [e for e in entries if not (e.symlink is not None and PurePosixPath(e.path).name in drop)]


def image_specs() -> list[ImageSpec]:
    """The e2e images (module docstring); raises when ``hack/build-kube-e2e.sh`` has not run."""
    agnhost = Path(paths.e2e_bin("agnhost"))
    regression = Path(paths.e2e_bin("regression-issue-74839"))
    pause = Path(paths.kube_bin("pause"))
    base = images.busybox_entries()
    nss = LayerEntry("etc/nsswitch.conf", text=NSSWITCH, mode=0o644)
    # /bin/sh is bash: Debian's busybox sh runs its own applets before PATH (its nc has no -u, its ip
    # fewer options), and the specs run their commands through `/bin/sh -c`.
    agnhost_entries = (
        *without(base, (*AGNHOST_TOOLS, "sh")), LayerEntry("bin/sh", symlink="/usr/bin/bash"), nss,
        *host_tool_entries(AGNHOST_TOOLS),
        LayerEntry("agnhost", source=agnhost), LayerEntry("agnhost-2", symlink="agnhost"),
        LayerEntry("uploads", mode=0o777),
    )
    return [
        ImageSpec(AGNHOST, agnhost_entries, entrypoint=("/agnhost",), cmd=("pause",)),
        ImageSpec(NGINX, agnhost_entries, entrypoint=("/agnhost",), cmd=("netexec", "--http-port=80")),
        ImageSpec(BUSYBOX, tuple(base), cmd=("sh",)),
        ImageSpec(PAUSE, (LayerEntry("pause", source=pause),), entrypoint=("/pause",)),
        ImageSpec(REGRESSION_74839, (*base, LayerEntry("regression-issue-74839", source=regression),
                                     LayerEntry("boom-server", text=BOOM_SERVER, mode=0o755)),
                  entrypoint=("/boom-server",)),
    ]


#: The 1.20 spec runs image 1.0, which found its own address and died on an RST (the spec's check is
#: "the server never restarted"); the tree's server reads POD_IP (set by later specs only) and just
#: logs the RST. This entrypoint gives the tree's server the 1.0 behaviour the spec relies on.
BOOM_SERVER = """#!/bin/sh
if [ -z "$POD_IP" ]; then
    POD_IP=$(ip -o -f inet addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
fi
export POD_IP
/regression-issue-74839 2>&1 | while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in
        *"ERROR: RST received"*)
            echo "boom-server: an RST reached the server: exiting, as image 1.0 did"
            killall regression-issue-74839
            exit 1 ;;
    esac
done
"""


def ensure_bundle() -> Path:
    """The bundle tarball of the e2e images (cached by content, like the sandbox's own)."""
    return images.ensure_bundle(image_specs())


__all__ = [
    "AGNHOST",
    "AGNHOST_TOOLS",
    "BUSYBOX",
    "E2E_IMAGES",
    "NGINX",
    "PAUSE",
    "REGRESSION_74839",
    "ensure_bundle",
    "host_tool_entries",
    "image_path",
    "image_specs",
    "parse_ldd",
    "without",
]
