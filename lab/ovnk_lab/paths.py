"""Where the lab finds its binaries.

Debian packages provide OVS, OVN, etcd and containerd on ``PATH``. The
Kubernetes binaries and helm/cnitool/kubectl are built or fetched by
``hack/setup.sh`` into ``$OVNK_CACHE`` (default ``/var/cache/ovnk``).
"""

from __future__ import annotations

import os
import shutil
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


def system_bin(name: str) -> str:
    """Path of a binary from a Debian package."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin:/usr/lib/cni")
    if not found:
        raise StartupError(f"{name} is not installed; {SETUP_HINT}")
    return found


def ovn_schema(name: str) -> str:
    """Path of an OVSDB schema (``ovn-nb``, ``ovn-sb``, ``vswitch``)."""
    for base in ("/usr/share/ovn", "/usr/local/share/ovn", "/usr/share/openvswitch", "/usr/local/share/openvswitch"):
        path = Path(base) / f"{name}.ovsschema"
        if path.exists():
            return str(path)
    raise StartupError(f"schema {name}.ovsschema not found; {SETUP_HINT}")
