"""The ovnk container image (``hack/Containerfile``) built here, without a container daemon.

No Docker daemon and no registry are needed, and the image has two layers so that a
source change costs seconds, not minutes:

* **base** (:func:`ensure_base`, minutes, once per :func:`base_key`: the Containerfile, ovnk's
  third-party requirements, the Debian release, this recipe): ``mmdebstrap`` builds a minimal
  Debian rootfs of this machine's release (only Debian's package mirror is reached) with the
  runtime packages the Containerfile's final stage installs (parsed from it, so the two lists
  cannot drift apart), and a venv at ``/opt/ovnk/venv`` made by the rootfs' own
  ``/usr/bin/python3`` (``chroot``) holding pip and ovnk's requirements, installed from wheels
  built here (no index inside the chroot);
* **ovnk** (:func:`ensure_top_layer`, seconds, once per :func:`cache_key`: the sources,
  packaging and image scripts): ovnk installed *non-editable* into that venv from a wheel of a
  copy of ``pyproject.toml setup.py ovnk core cni plugins`` (the files the Containerfile
  copies) by this machine's pip with ``--root`` (:func:`install_distribution`; the base layer
  checks both Pythons have the same minor version), the native CNI shim compiled here into
  the venv's ``libexec/ovnk/``, and ``hack/image/ovnk-entrypoint``/``ovnk-lookup`` in
  ``/usr/local/bin``.

The layers become an OCI image (:func:`ovnk_lab.images.write_layer_bundle`) named
``localhost/ovnk:<chart appVersion>-<key>`` with the Containerfile's ``ENTRYPOINT`` and
``PATH``, cached under ``$OVNK_CACHE/images/ovnk-<key>.tar``; a second run only imports it
(``ctr images import`` into a sandbox node's containerd, ``kind load image-archive`` into a kind
node's). :func:`ensure_plugin_image` adds a third layer with a third-party plugin's
distribution, as its author would ship it (``FROM`` the ovnk image, ``RUN pip install``).

Run it alone with ``python -m ovnk_lab.ovnk_image`` (prints the bundle path and the image
name); ``hack/build-image.sh`` wraps that.
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
import tomllib
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
PYPROJECT = REPO_ROOT / "pyproject.toml"
IMAGE_REPOSITORY = "localhost/ovnk"
#: What the Containerfile copies into its build stage (the distribution's sources).
SOURCE_PATHS = ("pyproject.toml", "setup.py", "ovnk", "core", "cni", "plugins")
IMAGE_SCRIPTS = ("ovnk-entrypoint", "ovnk-lookup")
VENV = "/opt/ovnk/venv"
#: The Containerfile's ENTRYPOINT and ENV PATH (tests/chart/test_image_build.py checks they match).
ENTRYPOINT = ("/usr/local/bin/ovnk-entrypoint",)
IMAGE_PATH = f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the recipe changes in a way the key does not see.
RECIPE_VERSION = "2"
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


def dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """ovnk's third-party requirements (``[project] dependencies``): what the base layer installs."""
    deps = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies") or []
    return [str(d) for d in deps]


def _source_files() -> Iterator[Path]:
    for name in (*SOURCE_PATHS, *(f"hack/image/{s}" for s in IMAGE_SCRIPTS)):
        path = REPO_ROOT / name
        if path.is_file():
            yield path
            continue
        yield from _tree_files(path)


def _tree_files(path: Path) -> Iterator[Path]:
    for found in sorted(path.rglob("*")):
        if (found.is_file() and "__pycache__" not in found.parts and "build" not in found.parts
                and not any(p.endswith(".egg-info") for p in found.parts)
                and not found.name.endswith((".pyc", ".so"))):
            yield found


def _python_tag() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def base_key() -> str:
    """Hash of the base layer's inputs: Debian release and packages (the Containerfile), ovnk's
    third-party requirements, the venv's place and Python version, this recipe."""
    digest = hashlib.sha256()
    for item in (RECIPE_VERSION, debian_suite(), " ".join(runtime_packages()), "\n".join(dependencies()),
                 VENV, _python_tag(), CONTAINERFILE.read_text()):
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def cache_key() -> str:
    """Hash of everything that goes into the image: the base layer's key, the sources, packaging and
    image scripts (the top layer), the image's name and config (see the module docstring)."""
    digest = hashlib.sha256()
    for item in (base_key(), images.BUILDER_VERSION, chart_app_version(), IMAGE_PATH, " ".join(ENTRYPOINT)):
        digest.update(item.encode() + b"\0")
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_name(key: str | None = None) -> str:
    return f"{IMAGE_REPOSITORY}:{chart_app_version()}-{key or cache_key()}"


def _bundle_path(key: str) -> Path:
    return images.images_cache() / f"ovnk-{key}.tar"


def cached_image() -> OvnkImage | None:
    key = cache_key()
    bundle = _bundle_path(key)
    return OvnkImage(bundle, image_name(key)) if bundle.exists() else None


def ensure_image(*, progress: bool = False) -> OvnkImage:
    """The ovnk image bundle, built once per content: the base layer once per Debian package list and
    requirements (minutes), the ovnk layer once per source change (seconds), then a cache hit."""
    key = cache_key()
    bundle = _bundle_path(key)
    name = image_name(key)
    if bundle.exists():
        return OvnkImage(bundle, name)
    base = ensure_base(progress=progress)
    top = ensure_top_layer(key)
    partial = bundle.with_name(f"{bundle.name}.tmp{os.getpid()}")
    images.write_layer_bundle(partial, name=name, layers=[base, top], entrypoint=ENTRYPOINT, env=(IMAGE_PATH,))
    partial.replace(bundle)
    _forget_older(keep={bundle, base, top})
    logger.info("built %s into %s", name, bundle)
    return OvnkImage(bundle, name)


def _forget_older(*, keep: set[Path]) -> None:
    """Remove the cached images and layers of older sources (nothing refers to them any more)."""
    for pattern in ("ovnk-????????????????.tar", "ovnk-base-*.tar", "ovnk-top-*.tar"):
        for old in images.images_cache().glob(pattern):
            if old not in keep:
                old.unlink(missing_ok=True)


def ensure_base(*, progress: bool = False) -> Path:
    """The base layer: the Debian rootfs with the runtime packages and ``/opt/ovnk/venv`` holding
    pip and ovnk's third-party requirements (everything but ovnk), cached by :func:`base_key`."""
    layer = images.images_cache() / f"ovnk-base-{base_key()}.tar"
    if layer.exists():
        return layer
    if shutil.which("mmdebstrap") is None:
        raise StartupError(f"mmdebstrap is not installed; {paths.SETUP_HINT}")
    with tempfile.TemporaryDirectory(prefix="ovnk-base-", dir=images.images_cache()) as tmp:
        partial = Path(tmp) / "rootfs.tar"
        _build_base_tar(Path(tmp), partial, quiet=not progress)
        partial.replace(layer)
    return layer


def _build_base_tar(work: Path, out: Path, *, quiet: bool) -> None:
    wheels = work / "wheels"
    # The requirements and pip as wheels (this machine's pip and its cache); pip then runs from its
    # own wheel inside the rootfs: the image build needs no index and no network inside.
    run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), *dependencies(), "pip"],
        timeout=900)
    pip_wheel = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheel:
        raise StartupError(f"pip wheel missing from {wheels}")
    inside_wheels = "/tmp/ovnk-wheels"
    requirements = work / "requirements.txt"
    requirements.write_text("\n".join([*dependencies(), "pip"]) + "\n")
    q = shlex.quote
    hooks = [
        f'mkdir -p "$1{inside_wheels}" && cp {q(str(wheels))}/*.whl {q(str(requirements))} "$1{inside_wheels}/"',
        f'chroot "$1" /usr/bin/python3 -m venv --without-pip {VENV}',
        f'chroot "$1" {VENV}/bin/python {inside_wheels}/{pip_wheel[-1].name}/pip install -q --no-index '
        f'--no-cache-dir --find-links {inside_wheels} -r {inside_wheels}/requirements.txt',
        # The ovnk layer is installed by this machine's Python: the two must agree on the venv's layout.
        f'test -d "$1{VENV}/lib/{_python_tag()}/site-packages" || '
        f'{{ echo "the image\'s Python is not {_python_tag()} (this machine\'s)" >&2; exit 1; }}',
        f'rm -rf "$1{inside_wheels}" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
    ]
    argv = ["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar",
            f"--include={','.join(runtime_packages())}",
            *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
            *(f"--customize-hook={h}" for h in hooks),
            *(["--quiet"] if quiet else []),
            debian_suite(), str(out), f"deb {debian_mirror()} {debian_suite()} main"]
    logger.info("building the ovnk image's base layer: %s", " ".join(q(a) for a in argv))
    run(argv, timeout=1800)


def ensure_top_layer(key: str | None = None) -> Path:
    """The ovnk layer (seconds): ovnk installed non-editable into the base's venv from a wheel of the
    sources, the native shim, the entry-point scripts. Cached by :func:`cache_key`."""
    key = key or cache_key()
    layer = images.images_cache() / f"ovnk-top-{key}.tar"
    if layer.exists():
        return layer
    with tempfile.TemporaryDirectory(prefix="ovnk-top-", dir=images.images_cache()) as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        for name in SOURCE_PATHS:
            source = REPO_ROOT / name
            if source.is_dir():
                shutil.copytree(source, src / name, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "*.so", "*.egg-info", "build"))
            else:
                shutil.copy2(source, src / name)
        stage = work / "stage"
        install_distribution(src, stage, work=work)
        shim = stage / VENV.lstrip("/") / "libexec" / "ovnk" / "ovnk-cni-shim"
        shim.parent.mkdir(parents=True)
        run([sys.executable, "-m", "ovnk", "cni", "build-shim", "--output", str(shim)], timeout=300)
        for script in IMAGE_SCRIPTS:
            target = stage / "usr" / "local" / "bin" / script
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / "hack" / "image" / script, target)
            target.chmod(0o755)
        partial = work / "layer.tar"
        images.write_dir_layer(stage, partial)
        partial.replace(layer)
    return layer


def install_distribution(source: Path, stage: Path, *, work: Path) -> None:
    """``pip install --no-deps`` of the Python distribution at ``source`` into the image's venv, staged
    under ``stage`` (the layer's tree). What ``RUN /opt/ovnk/venv/bin/pip install <dist>`` does in a
    Containerfile, done by this machine's pip (same Python minor version, checked by the base layer):
    scripts then name this machine's interpreter and are pointed at the venv's, and the byte code is
    compiled with hash-based validation (a layer's files carry no meaningful mtime)."""
    wheels = work / "dist-wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(wheels), str(source)], timeout=300)
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        raise StartupError(f"expected one wheel of {source}, got {[w.name for w in built]}")
    # --ignore-installed: without it pip uninstalls this machine's own copy of the distribution (the
    # editable ovnk of the venv running this) before installing under --root.
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile", "--ignore-installed",
         "--no-warn-script-location", "--prefix", VENV, "--root", str(stage), str(built[0])], timeout=300)
    bin_dir = stage / VENV.lstrip("/") / "bin"
    for script in sorted(bin_dir.glob("*")) if bin_dir.is_dir() else ():
        text = script.read_bytes()
        if text.startswith(b"#!"):
            first, _, rest = text.partition(b"\n")
            if b"python" in first:
                script.write_bytes(f"#!{VENV}/bin/python\n".encode() + rest)
        if os.fsencode(sys.executable) in script.read_bytes():
            raise StartupError(f"{script.name}: pip wrote a launcher naming {sys.executable} that was not rewritten")
    site = stage / VENV.lstrip("/") / "lib" / _python_tag() / "site-packages"
    if not site.is_dir():
        raise StartupError(f"pip did not install {source} into {site}")
    run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash",
         "-s", str(stage), "-p", "/", str(site)], timeout=300)


def ensure_plugin_image(distribution: Path, *, repository: str, progress: bool = False) -> OvnkImage:
    """An image ``FROM`` the ovnk image with the Python distribution at ``distribution`` installed
    (a plugin's source tree with its ``pyproject.toml``): the ovnk image's two layers and a third
    one with that distribution in ``/opt/ovnk/venv`` (:func:`install_distribution`, ``--no-deps``:
    its requirement ``ovnk`` is the image's), named ``<repository>:<appVersion>-<key>`` and cached
    by the ovnk image's key and the distribution's files. What its author's Containerfile does::

        FROM localhost/ovnk:<tag>
        COPY . /src
        RUN /opt/ovnk/venv/bin/pip install --no-deps /src
    """
    ovnk = ensure_image(progress=progress)
    base, top = ensure_base(), ensure_top_layer()
    digest = hashlib.sha256(ovnk.name.encode() + b"\0" + repository.encode() + b"\0")
    for path in _tree_files(distribution):
        digest.update(str(path.relative_to(distribution)).encode() + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()[:16]
    name = f"{repository}:{chart_app_version()}-{key}"
    stem = "ovnk-plugin-" + re.sub(r"[^A-Za-z0-9]+", "-", repository).strip("-")
    bundle = images.images_cache() / f"{stem}-{key}.tar"
    if bundle.exists():
        return OvnkImage(bundle, name)
    with tempfile.TemporaryDirectory(prefix="ovnk-plugin-", dir=images.images_cache()) as tmp:
        work = Path(tmp)
        src = work / "src"
        shutil.copytree(distribution, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info",
                                                                          "build"))
        stage = work / "stage"
        install_distribution(src, stage, work=work)
        layer = work / "layer.tar"
        images.write_dir_layer(stage, layer)
        partial = work / "bundle.tar"
        images.write_layer_bundle(partial, name=name, layers=[base, top, layer], entrypoint=ENTRYPOINT,
                                  env=(IMAGE_PATH,))
        partial.replace(bundle)
    for old in images.images_cache().glob(f"{stem}-????????????????.tar"):
        if old != bundle:
            old.unlink(missing_ok=True)
    logger.info("built %s into %s", name, bundle)
    return OvnkImage(bundle, name)


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
