#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
# (plus the pause binary) from Debian 12 (bookworm)'s `kubernetes` source
# package (1.20), offline, with the machine's Go. Cached under
# $OVNK_CACHE/kube/<source version>_r<recipe>/ so the ~5-minute cold build
# happens once per machine.
#
# The same source on Debian 12 and Debian 13: the private source list names
# the bookworm suites explicitly (trixie's `kubernetes` source package is
# 1.32 and holds kubectl only). On Debian 13 it builds with trixie's Go 1.24
# (GOTOOLCHAIN=local keeps it from looking for another toolchain). The
# system's apt state is not touched.
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
log() { printf '[build-kube] %s\n' "$*" >&2; }
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/apt-private.sh
. "$HACK/apt-private.sh"

# Bump when the build recipe changes, so cached binaries are rebuilt.
# r2: client-go's version package gets the version too (/version of the apiserver said v0.0.0-master).
RECIPE=2

# The newest version of source package $1 in the private list.
source_version() {
  local v best=""
  for v in $(apt-cache "${APT_OPTS[@]}" showsrc "$1" 2>/dev/null | awk '/^Version:/ {print $2}'); do
    if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done
  printf '%s\n' "$best"
}

# Binary packages too: hack/get-tools.sh takes kubectl 1.20 from bookworm's kubernetes-client.
apt_private apt-src "deb deb-src" bookworm bookworm-updates
version="$(source_version kubernetes)"
[[ -n $version ]] || { log "source package kubernetes not found in bookworm"; exit 1; }

OUT="$OVNK_CACHE/kube/${version}_r$RECIPE"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet pause)
have_all=1
for b in "${BINARIES[@]}"; do [[ -x $OUT/bin/$b ]] || have_all=0; done
if [[ $have_all == 1 ]]; then
  ln -sfn "$OUT" "$OVNK_CACHE/kube/current"
  exit 0
fi

log "building Kubernetes $version from source (one-time, ~5 minutes on 2 cores)"
WORK="$OVNK_CACHE/kube-build"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$version" >/dev/null
dpkg-source --no-check -x ./kubernetes_*.dsc src >/dev/null
cd src

# Debian's vendored reflect2 1.0.1 crashes under Go >= 1.18; use Debian's packaged copy.
rm -rf vendor/github.com/modern-go/reflect2
cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
# GOTOOLCHAIN=local: Go >= 1.21 (Debian 13) would otherwise try to fetch the toolchain go.mod asks for.
export GO111MODULE=off GOPATH="$PWD/.go" GOPROXY=off CGO_ENABLED=0 GOTOOLCHAIN=local
export GOCACHE="$WORK/gocache"
unset GOFLAGS
cd .go/src/k8s.io/kubernetes

log "generating OpenAPI definitions"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
pkgs="$(grep -RIl --include='*.go' -e '+k8s:openapi-gen=' pkg cmd vendor 2>/dev/null \
        | xargs -n1 dirname | sort -u \
        | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)' \
        | sed -E 's#^vendor/##; t; s#^#k8s.io/kubernetes/#' | paste -sd, -)"
"$WORK/openapi-gen" -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  -o "$GOPATH/src" >/dev/null

# Debian versions look like 1.20.5+really1.20.2-1.1+deb12u1: the real upstream
# version follows "+really" when present.
upstream="${version#*+really}"; upstream="${upstream%%-*}"; upstream="${upstream%%+*}"
major="${upstream%%.*}"; minor="${upstream#*.}"; minor="${minor%%.*}"
# Two version packages: component-base's (the binaries' --version) and client-go's, which the
# apiserver's /version endpoint reads (through the aggregator). GOPATH mode: paths include vendor/.
LDFLAGS="-s -w"
for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
done

mkdir -p "$OUT.tmp/bin"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  log "go build $b"
  go build -ldflags "$LDFLAGS" -o "$OUT.tmp/bin/$b" "./cmd/$b"
done
log "go build kubelet"
go build -tags providerless,dockerless -ldflags "$LDFLAGS" -o "$OUT.tmp/bin/kubelet" ./cmd/kubelet
gcc -Os -static -o "$OUT.tmp/bin/pause" build/pause/linux/pause.c
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
ln -sfn "$OUT" "$OVNK_CACHE/kube/current"
cd /; rm -rf "$WORK"
log "built into $OUT"
