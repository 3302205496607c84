"""Where the lab finds its binaries.

Debian packages provide etcd, containerd and the other system tools on
``PATH``. The Kubernetes binaries and helm/cnitool/kubectl are built or
fetched by ``hack/setup.sh`` into ``$OVNK_CACHE`` (default ``/var/cache/ovnk``).

Open vSwitch and OVN come from one *installation* (:class:`OvnInstall`), used
for every daemon, tool and schema so that they always match: the Debian
packages (``system``) or a private prefix that ``hack/get-ovn.sh`` fills with
Debian 13's OVS/OVN on machines whose packages are older. By default the
newest available one is used; ``OVNK_OVN_PREFIX=system`` or
``OVNK_OVN_PREFIX=<prefix dir>`` picks one (docs/testbed.md). Processes the
lab starts get the installation's bin dirs first on ``PATH`` (:func:`tool_env`),
so product code that runs ``ovs-ofctl`` by name runs the same one.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ovnk.core.errors import StartupError

SETUP_HINT = "run hack/setup.sh (or `make setup`) to install it"


def cache_dir() -> Path:
    return Path(os.environ.get("OVNK_CACHE", "/var/cache/ovnk"))


def kube_bin(name: str) -> str:
    """Path of a Kubernetes binary built by hack/build-kube.sh."""
    path = cache_dir() / "kube" / "current" / "bin" / name
    if not os.access(path, os.X_OK):
        raise StartupError(f"{name} not found at {path}; {SETUP_HINT}")
    return str(path)


def tool_bin(name: str) -> str:
    """Path of helm, cnitool or kubectl (1.20) fetched by hack/get-tools.sh."""
    path = cache_dir() / "tools" / "bin" / name
    if not os.access(path, os.X_OK):
        raise StartupError(f"{name} not found at {path}; {SETUP_HINT}")
    return str(path)


E2E_HINT = "run hack/build-kube-e2e.sh (or `make e2e-tools`) to build it"


def e2e_bin(name: str) -> str:
    """Path of ``e2e.test``, ``agnhost``, ``ginkgo`` or ``regression-issue-74839`` built by hack/build-kube-e2e.sh."""
    path = cache_dir() / "kube-e2e" / "current" / "bin" / name
    if not os.access(path, os.X_OK):
        raise StartupError(f"{name} not found at {path}; {E2E_HINT}")
    return str(path)


SYSTEM_DIRS = "/usr/sbin:/sbin:/usr/bin:/bin"


def system_bin(name: str) -> str:
    """Path of a binary from a Debian package (never an OVS/OVN program: see :func:`ovs_bin`)."""
    if name.startswith(OVS_PROGRAM_PREFIXES):
        raise StartupError(f"{name} comes from the chosen OVS/OVN installation: use paths.ovs_bin({name!r})")
    found = shutil.which(name) or shutil.which(name, path=f"{SYSTEM_DIRS}:/usr/lib/cni")
    if not found:
        raise StartupError(f"{name} is not installed; {SETUP_HINT}")
    return found


# -- Open vSwitch and OVN --------------------------------------------------------------

OVN_PREFIX_ENV = "OVNK_OVN_PREFIX"
OVS_PROGRAM_PREFIXES = ("ovs-", "ovsdb-", "ovn-")
#: Debian 12's OVS 3.1.0 userspace datapath has two faults the e2e suite works around: its
#: conntrack can abort ovs-vswitchd under connection churn (``conntrack.c: assertion
#: conn->conn_type == CT_CONN_TYPE_DEFAULT failed``; the code went with OVS commit 1116459b3
#: "conntrack: Remove nat_conn introducing key directionality", first released in 3.3.0 and
#: backported to 3.1.3), and it kept stale drop megaflows after an ACL was removed (not seen
#: with 3.5.0, docs/testbed.md). The workarounds apply below this version only.
OVS_FIXED_VERSION = (3, 3)
#: ACL tiers (the ``tier`` column) came with OVN 23.06.
OVN_TIERS_VERSION = (23, 6)


def parse_version(text: str) -> tuple[int, ...]:
    """The first ``major.minor[.patch]`` in ``text`` (``ovs-vswitchd (Open vSwitch) 3.5.0``)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise StartupError(f"no version number in {text!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


@dataclass(frozen=True)
class OvnInstall:
    """One installation of Open vSwitch and OVN: where its programs and schemas are, its versions.

    :ivar name: ``system`` (the Debian packages) or the prefix directory.
    :ivar bin_dirs: where its programs are, searched in order.
    :ivar ovs_share: the directory of ``vswitch.ovsschema``.
    :ivar ovn_share: the directory of ``ovn-nb.ovsschema`` and ``ovn-sb.ovsschema``.
    """

    name: str
    bin_dirs: tuple[Path, ...]
    ovs_share: Path
    ovn_share: Path
    ovs_version: tuple[int, ...]
    ovn_version: tuple[int, ...]

    @property
    def label(self) -> str:
        ovs = ".".join(map(str, self.ovs_version))
        # OVN numbers its releases YY.MM.
        ovn = ".".join(f"{part:02d}" if index == 1 else str(part) for index, part in enumerate(self.ovn_version))
        return f"OVS {ovs} / OVN {ovn} ({self.name})"

    @property
    def old_ovs(self) -> bool:
        """Whether this OVS has Debian 12's 3.1.0 datapath faults (see :data:`OVS_FIXED_VERSION`)."""
        return self.ovs_version < OVS_FIXED_VERSION

    @property
    def acl_tiers(self) -> bool:
        """Whether this OVN's NB schema has the ACL ``tier`` column."""
        return self.ovn_version >= OVN_TIERS_VERSION

    def bin(self, name: str) -> str:
        """Path of an OVS/OVN program of this installation."""
        for directory in self.bin_dirs:
            path = directory / name
            if os.access(path, os.X_OK) and path.is_file():
                return str(path)
        raise StartupError(f"{name} not found in {self.label} ({', '.join(map(str, self.bin_dirs))}); {SETUP_HINT}")

    def schema(self, name: str) -> str:
        """Path of an OVSDB schema of this installation (``ovn-nb``, ``ovn-sb``, ``vswitch``)."""
        base = self.ovs_share if name == "vswitch" else self.ovn_share
        path = base / f"{name}.ovsschema"
        if not path.exists():
            raise StartupError(f"schema {path} not found; {SETUP_HINT}")
        return str(path)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with this installation first on ``PATH``.

        ``OVS_PKGDATADIR``/``OVN_PKGDATADIR`` point at its data too, for the tools that read it.
        """
        env = dict(os.environ if base is None else base)
        dirs = [str(d) for d in self.bin_dirs]
        rest = [d for d in env.get("PATH", SYSTEM_DIRS).split(":") if d and d not in dirs]
        env["PATH"] = ":".join([*dirs, *rest])
        env["OVS_PKGDATADIR"] = str(self.ovs_share)
        env["OVN_PKGDATADIR"] = str(self.ovn_share)
        return env


def _probe_version(program: Path) -> tuple[int, ...]:
    res = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise StartupError(f"{program} --version failed: {res.stderr.strip() or res.stdout.strip()}")
    return parse_version(res.stdout.splitlines()[0] if res.stdout else "")


def system_install() -> OvnInstall | None:
    """The Debian packages' OVS/OVN, or None when they are not installed."""
    vswitchd = shutil.which("ovs-vswitchd", path=SYSTEM_DIRS)
    northd = shutil.which("ovn-northd", path=SYSTEM_DIRS)
    if not vswitchd or not northd:
        return None
    return OvnInstall(name="system", bin_dirs=(Path("/usr/bin"), Path("/usr/sbin")),
                      ovs_share=Path("/usr/share/openvswitch"), ovn_share=Path("/usr/share/ovn"),
                      ovs_version=_probe_version(Path(vswitchd)), ovn_version=_probe_version(Path(northd)))


def prefix_install(prefix: Path) -> OvnInstall:
    """The installation in ``prefix`` (``bin``, ``sbin``, ``share/{openvswitch,ovn}``), e.g. hack/get-ovn.sh's."""
    prefix = prefix.resolve()
    bin_dirs = (prefix / "bin", prefix / "sbin")
    vswitchd, northd = prefix / "sbin" / "ovs-vswitchd", prefix / "bin" / "ovn-northd"
    if not vswitchd.exists() or not northd.exists():
        raise StartupError(f"{prefix} holds no OVS/OVN installation (no sbin/ovs-vswitchd, bin/ovn-northd)")
    return OvnInstall(name=str(prefix), bin_dirs=bin_dirs, ovs_share=prefix / "share" / "openvswitch",
                      ovn_share=prefix / "share" / "ovn", ovs_version=_probe_version(vswitchd),
                      ovn_version=_probe_version(northd))


def cached_install() -> OvnInstall | None:
    """hack/get-ovn.sh's current installation, or None."""
    current = cache_dir() / "ovn" / "current"
    if not (current / "ovnk-install").exists():
        return None
    return prefix_install(current)


@functools.cache
def _select(choice: str, cache: str) -> OvnInstall:
    if choice == "system":
        found = system_install()
        if found is None:
            raise StartupError(f"{OVN_PREFIX_ENV}=system but the Debian OVS/OVN packages are not installed")
        return found
    if choice:
        return prefix_install(Path(choice))
    candidates = [i for i in (system_install(), cached_install()) if i is not None]
    if not candidates:
        raise StartupError(f"no Open vSwitch/OVN installation found; {SETUP_HINT}")
    # The newest OVN wins (then OVS); on a tie the Debian packages.
    return max(candidates, key=lambda i: (i.ovn_version, i.ovs_version, i.name == "system"))


def ovn_install() -> OvnInstall:
    """The OVS/OVN installation the lab uses: ``$OVNK_OVN_PREFIX`` (``system`` or a prefix dir), else the newest."""
    return _select(os.environ.get(OVN_PREFIX_ENV, "").strip(), str(cache_dir()))


LEGACY_PREFIX_ENV = "OVNK_OVN_LEGACY_PREFIX"


def legacy_install() -> OvnInstall | None:
    """An installation whose OVN predates ACL tiers (Debian 12's 23.03), for the tests of the product's
    fallback: ``$OVNK_OVN_LEGACY_PREFIX`` when set, else the Debian packages if they are that old; None
    when there is none (a Debian 13 machine)."""
    prefix = os.environ.get(LEGACY_PREFIX_ENV, "").strip()
    found = prefix_install(Path(prefix)) if prefix else system_install()
    return found if found is not None and not found.acl_tiers else None


def ovs_bin(name: str) -> str:
    """Path of an OVS/OVN program (``ovs-vsctl``, ``ovn-northd``, ...) of the chosen installation."""
    return ovn_install().bin(name)


def ovn_schema(name: str) -> str:
    """Path of an OVSDB schema (``ovn-nb``, ``ovn-sb``, ``vswitch``) of the chosen installation."""
    return ovn_install().schema(name)


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the chosen installation first on ``PATH``."""
    return ovn_install().env(base)


def default_env() -> dict[str, str]:
    """The environment of processes the lab starts: :func:`tool_env`, or this process's own when no
    OVS/OVN is installed at all (a program that needs one then fails by name, through :func:`ovs_bin`)."""
    try:
        return tool_env()
    except StartupError:
        return dict(os.environ)
