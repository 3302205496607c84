"""The ovnk container image (``hack/Containerfile``) built here, without a container daemon.

No Docker daemon and no registry are needed: ``mmdebstrap`` builds a minimal
Debian rootfs of this machine's release (only Debian's package mirror is
reached) with the runtime packages the Containerfile's final stage installs
(parsed from it, so the two lists cannot drift apart). Customize hooks then do
what the Containerfile's build stage does:

* a venv at ``/opt/ovnk/venv`` made by the rootfs' own ``/usr/bin/python3``
  (``chroot``), into which ovnk is installed *non-editable* from wheels built
  here (``pip wheel`` of a copy of ``pyproject.toml setup.py ovnk core cni
  plugins``, the same files the Containerfile copies; no index inside the
  chroot);
* the native CNI shim, compiled here (a static binary) into the venv's
  ``libexec/ovnk/``, where ``ovnk cni install`` looks for it;
* ``hack/image/ovnk-entrypoint`` and ``ovnk-lookup`` in ``/usr/local/bin``;
* ``ovnk --version`` run inside the rootfs as the build's smoke check.

mmdebstrap writes the rootfs as one tar, which becomes the single layer of an
OCI image (:func:`ovnk_lab.images.write_layer_bundle`) named
``localhost/ovnk:<chart appVersion>-<key>``, with the Containerfile's
``ENTRYPOINT`` and ``PATH``. The bundle is cached under
``$OVNK_CACHE/images/ovnk-<key>.tar``, where ``<key>`` hashes everything that
goes in (sources, packaging, image scripts, the package list, the Debian
suite and this recipe), so a second run only imports it. ``ctr images
import`` loads it into a sandbox node's containerd, ``kind load
image-archive`` into a kind node's.

Run it alone with ``python -m ovnk_lab.ovnk_image`` (prints the bundle path
and the image name); ``hack/build-image.sh`` wraps that.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk_lab import images
from ovnk_lab import paths
from ovnk_lab.procs import run

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "hack" / "Containerfile"
CHART_YAML = REPO_ROOT / "charts" / "ovnk" / "Chart.yaml"
IMAGE_REPOSITORY = "localhost/ovnk"
#: What the Containerfile copies into its build stage (the distribution's sources).
SOURCE_PATHS = ("pyproject.toml", "setup.py", "ovnk", "core", "cni", "plugins")
IMAGE_SCRIPTS = ("ovnk-entrypoint", "ovnk-lookup")
VENV = "/opt/ovnk/venv"
#: The Containerfile's ENTRYPOINT and ENV PATH (tests/chart/test_image_build.py checks they match).
ENTRYPOINT = ("/usr/local/bin/ovnk-entrypoint",)
IMAGE_PATH = f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the recipe changes in a way the key does not see.
RECIPE_VERSION = "1"
# Documentation, manual pages and translations stay out, as in Debian's -slim images.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*")


@dataclass(frozen=True)
class OvnkImage:
    """A built image: the OCI bundle tarball and the name it is imported under."""

    bundle: Path
    name: str  # repository:tag

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


def runtime_packages(containerfile: Path = CONTAINERFILE) -> list[str]:
    """The Debian packages the Containerfile's final stage installs (``apt-get install`` there)."""
    text = containerfile.read_text()
    stages = re.split(r"^FROM\s", text, flags=re.MULTILINE)
    final = stages[-1].replace("\\\n", " ")
    for line in final.splitlines():
        match = re.search(r"apt-get install ([^&]*)", line)
        if match:
            return [word for word in match.group(1).split() if not word.startswith("-")]
    raise StartupError(f"no `apt-get install` in the final stage of {containerfile}")


def chart_app_version(chart_yaml: Path = CHART_YAML) -> str:
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart_yaml.read_text(), flags=re.MULTILINE)
    if not match:
        raise StartupError(f"no appVersion in {chart_yaml}")
    return match.group(1)


def debian_suite() -> str:
    """The codename of this machine's Debian release: the image's base is the same release."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise StartupError("cannot tell the Debian release from /etc/os-release")


def debian_mirror() -> str:
    """The machine's own Debian archive (deb822 sources or sources.list), as hack/apt-private.sh finds it."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.lower().startswith("uris:"):
                for uri in line.split()[1:]:
                    if re.search(r"/debian/?$", uri):
                        return uri
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"]:
                for uri in parts[1:]:
                    if re.match(r"^[a-z]+://.*debian/?$", uri):
                        return uri
    return "http://deb.debian.org/debian"


def _source_files() -> Iterator[Path]:
    for name in (*SOURCE_PATHS, *(f"hack/image/{s}" for s in IMAGE_SCRIPTS), "hack/Containerfile"):
        path = REPO_ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and "__pycache__" not in found.parts and not found.name.endswith((".pyc", ".so")):
                yield found


def cache_key() -> str:
    """Hash of everything that goes into the image (see the module docstring)."""
    digest = hashlib.sha256()
    for item in (RECIPE_VERSION, images.BUILDER_VERSION, debian_suite(), " ".join(runtime_packages()),
                 chart_app_version(), IMAGE_PATH, " ".join(ENTRYPOINT)):
        digest.update(item.encode() + b"\0")
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_name(key: str | None = None) -> str:
    return f"{IMAGE_REPOSITORY}:{chart_app_version()}-{key or cache_key()}"


def cached_image() -> OvnkImage | None:
    key = cache_key()
    bundle = images.images_cache() / f"ovnk-{key}.tar"
    return OvnkImage(bundle, image_name(key)) if bundle.exists() else None


def ensure_image(*, progress: bool = False) -> OvnkImage:
    """The ovnk image bundle, built once per content (minutes the first time, then a cache hit)."""
    key = cache_key()
    bundle = images.images_cache() / f"ovnk-{key}.tar"
    name = image_name(key)
    if bundle.exists():
        return OvnkImage(bundle, name)
    if shutil.which("mmdebstrap") is None:
        raise StartupError(f"mmdebstrap is not installed; {paths.SETUP_HINT}")
    with tempfile.TemporaryDirectory(prefix="ovnk-image-", dir=images.images_cache()) as tmp:
        work = Path(tmp)
        layer = work / "rootfs.tar"
        _build_rootfs_tar(work, layer, quiet=not progress)
        partial = bundle.with_name(f"{bundle.name}.tmp{os.getpid()}")
        images.write_layer_bundle(partial, name=name, layer=layer, entrypoint=ENTRYPOINT, env=(IMAGE_PATH,))
        partial.replace(bundle)
    for old in images.images_cache().glob("ovnk-*.tar"):
        if old != bundle:  # an image of older sources: nothing refers to it any more
            old.unlink(missing_ok=True)
    logger.info("built %s into %s", name, bundle)
    return OvnkImage(bundle, name)


def _build_rootfs_tar(work: Path, out: Path, *, quiet: bool) -> None:
    python = sys.executable
    src = work / "src"
    src.mkdir()
    for name in SOURCE_PATHS:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so",
                                                                                "*.egg-info", "build"))
        else:
            shutil.copy2(source, src / name)
    wheels = work / "wheels"
    # ovnk and every dependency as wheels (this machine's pip and its cache), plus pip itself, which
    # then runs from its own wheel inside the rootfs: the image needs no index and no network.
    run([python, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(src), "pip"], timeout=900)
    shim = work / "ovnk-cni-shim"
    run([python, "-m", "ovnk", "cni", "build-shim", "--output", str(shim)], timeout=300)
    pip_wheel = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheel:
        raise StartupError(f"pip wheel missing from {wheels}")
    inside_wheels = "/tmp/ovnk-wheels"
    q = shlex.quote
    hooks = [
        f'mkdir -p "$1{inside_wheels}" && cp {q(str(wheels))}/*.whl "$1{inside_wheels}/"',
        f'chroot "$1" /usr/bin/python3 -m venv --without-pip {VENV}',
        f'chroot "$1" {VENV}/bin/python {inside_wheels}/{pip_wheel[-1].name}/pip install -q --no-index '
        f'--no-cache-dir --find-links {inside_wheels} ovnk',
        f'install -D -m 0755 {q(str(shim))} "$1{VENV}/libexec/ovnk/ovnk-cni-shim"',
        *(f'install -D -m 0755 {q(str(REPO_ROOT / "hack" / "image" / s))} "$1/usr/local/bin/{s}"'
          for s in IMAGE_SCRIPTS),
        f'chroot "$1" {VENV}/bin/ovnk --version',
        f'rm -rf "$1{inside_wheels}" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
    ]
    argv = ["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar",
            f"--include={','.join(runtime_packages())}",
            *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
            *(f"--customize-hook={h}" for h in hooks),
            *(["--quiet"] if quiet else []),
            debian_suite(), str(out), f"deb {debian_mirror()} {debian_suite()} main"]
    logger.info("building the ovnk image rootfs: %s", " ".join(q(a) for a in argv))
    run(argv, timeout=1800)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ovnk_lab.ovnk_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", action="store_true", help="print the cache key only (builds nothing)")
    args = parser.parse_args(argv)
    if args.key:
        print(cache_key())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        image = ensure_image(progress=True)
    except StartupError as exc:
        print(f"ovnk_image: error: {exc}", file=sys.stderr)
        return 1
    print(image.bundle)
    print(image.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
