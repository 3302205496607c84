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
# shellcheck source=hack/kube-source.sh
. "$HACK/kube-source.sh"

# Bump when the build recipe changes, so cached binaries are rebuilt.
# r2: client-go's version package gets the version too (/version of the apiserver said v0.0.0-master).
RECIPE=2

version="$(kube_source_version)"

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
kube_source_unpack "$WORK" "$version"

log "generating OpenAPI definitions"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
pkgs="$(grep -RIl --include='*.go' -e '+k8s:openapi-gen=' pkg cmd vendor 2>/dev/null \
        | xargs -n1 dirname | sort -u \
        | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)' \
        | sed -E 's#^vendor/##; t; s#^#k8s.io/kubernetes/#' | paste -sd, -)"
"$WORK/openapi-gen" -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  -o "$GOPATH/src" >/dev/null

LDFLAGS="$(kube_ldflags "$version")"

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
