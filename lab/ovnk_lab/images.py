"""Container images for the sandbox, built by hand without a registry.

Each image is a single uncompressed layer written as an OCI image layout
(``oci-layout``, ``index.json`` naming the image with
``io.containerd.image.name``, manifest, config, layer blob). All images go into
one bundle tarball that a node imports with one
``ctr -n k8s.io images import`` call. Bundles are cached under
``$OVNK_CACHE/images`` keyed by the content that went into them, so later runs
only import.

Images (pods use ``imagePullPolicy: Never``):

- :data:`PAUSE_IMAGE` — the ``pause`` binary built by ``hack/build-kube.sh``;
  containerd's ``sandbox_image``.
- :data:`BUSYBOX_IMAGE` (``image: busybox``) — Debian's busybox-static with
  its applet symlinks, plus ``/bin/ovnk-echo`` as a probe client: busybox
  1.35's ``nc`` cannot speak UDP (and its ``wget -T`` segfaults).
- :data:`ECHO_IMAGE` (``image: ovnk-test/echo``) — the same busybox plus
  ``/bin/ovnk-echo`` as entrypoint (source: ``lab/ovnk_lab/echo/echo.c``, protocol
  documented there). Its arguments are listeners, ``<port>/tcp`` or
  ``<port>/udp`` (default ``8080/tcp 8080/udp``). On TCP each line is echoed;
  the line ``hostname`` answers the pod's host name and ``clientip`` the
  client address seen by the server; ``GET /hostname`` and ``GET /clientip``
  work as HTTP for ``wget``. UDP datagrams follow the same rule.
  ``ovnk-echo send tcp|udp <ip> <port> <message> [timeout [source-port]]`` is the client.
  Multicast: ``ovnk-echo mcast-join <group> <port> [rejoin-seconds]`` joins a
  group and prints ``<source> <payload>`` per datagram, ``mcast-watch <group>
  <port>`` prints what arrives without joining (a packet socket), and
  ``mcast-send <group> <port> <message> [count [interval [ttl]]]`` sends.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.procs import run

PAUSE_IMAGE = "registry.k8s.io/pause:3.2"
BUSYBOX_IMAGE = "docker.io/library/busybox:latest"
ECHO_IMAGE = "docker.io/ovnk-test/echo:latest"

ECHO_SOURCE = Path(__file__).resolve().parent / "echo" / "echo.c"
ECHO_IN_IMAGE = "/bin/ovnk-echo"
# Bump when the way images are laid out changes, so cached bundles are rebuilt.
BUILDER_VERSION = "1"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class LayerEntry:
    """One entry of an image's layer: a file copied from the host, a symlink, a directory or text."""

    path: str  # inside the image, without the leading slash
    source: Path | None = None
    symlink: str | None = None
    text: str | None = None
    mode: int = 0o755

    def fingerprint(self) -> str:
        if self.source is not None:
            return f"{self.path}:file:{_sha256_file(self.source)}:{self.mode:o}"
        if self.symlink is not None:
            return f"{self.path}:link:{self.symlink}"
        if self.text is not None:
            return f"{self.path}:text:{hashlib.sha256(self.text.encode()).hexdigest()}:{self.mode:o}"
        return f"{self.path}:dir:{self.mode:o}"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    entries: tuple[LayerEntry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = field(default=(DEFAULT_PATH,))

    def fingerprint(self) -> str:
        parts = [self.name, json.dumps([self.entrypoint, self.cmd, self.env]),
                 *(e.fingerprint() for e in self.entries)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def images_cache() -> Path:
    path = paths.cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_echo_binary() -> Path:
    """Compile ``echo.c`` statically (cached by source content)."""
    source = ECHO_SOURCE.read_bytes()
    key = hashlib.sha256(source + b"gcc -Os -static").hexdigest()[:16]
    out = images_cache() / f"ovnk-echo-{key}"
    if out.exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    run([paths.system_bin("gcc"), "-Os", "-static", "-Wall", "-o", str(tmp), str(ECHO_SOURCE)], timeout=120)
    run([paths.system_bin("strip"), str(tmp)], check=False)
    tmp.replace(out)
    return out


def busybox_entries() -> list[LayerEntry]:
    """Debian's static busybox at /bin/busybox and one symlink per applet."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise StartupError(f"{busybox} not found; install busybox-static ({paths.SETUP_HINT})")
    listing = run([str(busybox), "--list-full"]).stdout.split()
    entries = [LayerEntry(d, mode=0o755) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "var")]
    entries += [LayerEntry("tmp", mode=0o1777), LayerEntry("bin/busybox", source=busybox),
                LayerEntry("etc/passwd", text=PASSWD, mode=0o644), LayerEntry("etc/group", text=GROUP, mode=0o644)]
    for applet in sorted(set(listing)):
        applet = applet.lstrip("/")
        if applet and applet != "bin/busybox":
            entries.append(LayerEntry(applet, symlink="/bin/busybox"))
    return entries


def image_specs() -> list[ImageSpec]:
    """The sandbox's images (see the module docstring)."""
    pause = Path(paths.kube_bin("pause"))
    echo = build_echo_binary()
    base = busybox_entries()
    echo_entry = LayerEntry(ECHO_IN_IMAGE.lstrip("/"), source=echo)
    return [
        ImageSpec(PAUSE_IMAGE, (LayerEntry("pause", source=pause),), entrypoint=("/pause",)),
        ImageSpec(BUSYBOX_IMAGE, (*base, echo_entry), cmd=("sh",)),
        ImageSpec(ECHO_IMAGE, (*base, echo_entry), entrypoint=(ECHO_IN_IMAGE,), cmd=("8080/tcp", "8080/udp")),
    ]


def ensure_bundle(specs: Sequence[ImageSpec] | None = None) -> Path:
    """The OCI bundle tarball holding every image, built once per content."""
    specs = list(specs) if specs is not None else image_specs()
    key = hashlib.sha256((BUILDER_VERSION + "".join(s.fingerprint() for s in specs)).encode()).hexdigest()[:16]
    out = images_cache() / f"sandbox-images-{key}.tar"
    if out.exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    _write_bundle(tmp, specs)
    tmp.replace(out)
    return out


def import_command(bundle: Path, *, address: str) -> list[str]:
    """The ``ctr`` command that imports ``bundle`` into containerd's CRI namespace."""
    return [paths.system_bin("ctr"), "-a", address, "-n", "k8s.io", "images", "import", str(bundle)]


# -- OCI layout ---------------------------------------------------------------


def _write_bundle(target: Path, specs: Sequence[ImageSpec]) -> None:
    blobs: dict[str, bytes] = {}
    manifests = []
    arch = _oci_arch()
    for spec in specs:
        layer = _layer_tar(spec.entries)
        layer_digest = _add_blob(blobs, layer)
        config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": list(spec.env), "Entrypoint": list(spec.entrypoint) or None,
                       "Cmd": list(spec.cmd) or None, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ovnk_lab.images"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": _add_blob(blobs, config_bytes), "size": len(config_bytes)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifests.append({
            "mediaType": MANIFEST_TYPE,
            "digest": _add_blob(blobs, manifest_bytes),
            "size": len(manifest_bytes),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": spec.name,
                            "org.opencontainers.image.ref.name": spec.name.rsplit(":", 1)[-1]},
        })
    index = {"schemaVersion": 2, "manifests": manifests}
    with tarfile.open(target, "w") as tar:
        _write_layout(tar, index, blobs)


def write_layer_bundle(target: Path, *, name: str, layers: Sequence[Path], entrypoint: Sequence[str] = (),
                       cmd: Sequence[str] = (), env: Sequence[str] = (DEFAULT_PATH,)) -> None:
    """An OCI bundle of one image made of the (uncompressed) tar files ``layers``, lowest first.

    For rootfs-sized layers (:mod:`ovnk_lab.ovnk_image`): each layer is streamed from disk, never
    held in memory. Same layout as :func:`ensure_bundle`'s, so ``ctr images import`` takes it.
    A node that already holds a layer (same digest) does not unpack it again.
    """
    if not layers:
        raise ValueError("an image needs at least one layer")
    digests = ["sha256:" + _sha256_file(layer) for layer in layers]
    arch = _oci_arch()
    blobs: dict[str, bytes] = {}
    config = {
        "created": "1970-01-01T00:00:00Z", "architecture": arch, "os": "linux",
        "config": {"Env": list(env), "Entrypoint": list(entrypoint) or None, "Cmd": list(cmd) or None,
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": digests},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"ovnk_lab.images: {layer.name}"}
                    for layer in layers],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _add_blob(blobs, config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": layer.stat().st_size}
                   for digest, layer in zip(digests, layers, strict=True)],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": _add_blob(blobs, manifest_bytes), "size": len(manifest_bytes),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
    }]}
    with tarfile.open(target, "w") as tar:
        _write_layout(tar, index, blobs)
        for digest, layer in dict(zip(digests, layers, strict=True)).items():
            info = _tar_info(f"blobs/sha256/{digest.split(':', 1)[1]}")
            info.size = layer.stat().st_size
            info.mode = 0o644
            with open(layer, "rb") as handle:
                tar.addfile(info, handle)


def write_dir_layer(source: Path, target: Path) -> None:
    """A layer tar of the tree ``source`` (paths relative to it), reproducible: owner root, mtime 0,
    sorted; directories 0755 unless the tree says otherwise. For small layers built in a staging
    directory (a Python distribution installed with ``--root``)."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(source.rglob("*")):
            rel = str(path.relative_to(source))
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def _write_layout(tar: tarfile.TarFile, index: dict[str, object], blobs: dict[str, bytes]) -> None:
    """The OCI image layout's files: ``oci-layout``, ``index.json`` and the in-memory blobs."""
    _tar_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    _tar_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
    _tar_dir(tar, "blobs")
    _tar_dir(tar, "blobs/sha256")
    for digest, data in blobs.items():
        _tar_bytes(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", data)


def _layer_tar(entries: Sequence[LayerEntry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if entry.source is not None:
                _tar_bytes(tar, entry.path, entry.source.read_bytes(), mode=entry.mode)
            elif entry.text is not None:
                _tar_bytes(tar, entry.path, entry.text.encode(), mode=entry.mode)
            elif entry.symlink is not None:
                info = _tar_info(entry.path)
                info.type = tarfile.SYMTYPE
                info.linkname = entry.symlink
                info.mode = 0o777
                tar.addfile(info)
            else:
                _tar_dir(tar, entry.path, mode=entry.mode)
    return buf.getvalue()


def _tar_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = _tar_info(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _tar_dir(tar: tarfile.TarFile, name: str, *, mode: int = 0o755) -> None:
    info = _tar_info(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_blob(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def echo_probe_command(protocol: str, address: str, port: int, message: str, *, timeout: float = 3.0) -> list[str]:
    """Argv (inside a busybox or echo pod) that sends ``message`` and prints the reply."""
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {protocol!r}")
    return [ECHO_IN_IMAGE, "send", protocol, address, str(port), message, f"{timeout:g}"]


__all__ = [
    "BUSYBOX_IMAGE",
    "ECHO_IMAGE",
    "PAUSE_IMAGE",
    "ImageSpec",
    "LayerEntry",
    "build_echo_binary",
    "echo_probe_command",
    "ensure_bundle",
    "image_specs",
    "import_command",
    "write_dir_layer",
    "write_layer_bundle",
]
