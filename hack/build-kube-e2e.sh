#!/usr/bin/env bash
# Build Kubernetes' own end-to-end suite from the same Debian 12 `kubernetes` source
# package (1.20) as the control plane (hack/build-kube.sh): `e2e.test` (go test -c
# ./test/e2e), a static `agnhost` (test/images/agnhost, the image most network specs
# run), the `ginkgo` runner (parallel runs) and regression-issue-74839 (the server of
# the conntrack INVALID-packet spec). `ovnk sandbox conformance` runs them
# (docs/conformance.md).
#
# Not part of hack/setup.sh: a cold `make demo` must not pay for it. `make test` and
# `make conformance` depend on it (make e2e-tools). Cached under
# $OVNK_CACHE/kube-e2e/<source version>_r<recipe>/bin with `current` pointing at the
# newest; a cold build takes about 12 minutes on 2 cores, a warm run a few seconds.
#
# The source package does not ship test/e2e/generated/bindata.go (the manifests and
# fixtures the suite embeds); it is generated here with the vendored go-bindata, with
# the arguments of the tree's own hack/generate-bindata.sh.
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
log() { printf '[build-kube-e2e] %s\n' "$*" >&2; }
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/apt-private.sh
. "$HACK/apt-private.sh"
# shellcheck source=hack/kube-source.sh
. "$HACK/kube-source.sh"

# Bump when the build recipe changes, so cached binaries are rebuilt.
RECIPE=1
BINARIES=(e2e.test agnhost ginkgo regression-issue-74839)
BASE="$OVNK_CACHE/kube-e2e"
mkdir -p "$BASE"
# Two checkouts (or CI and a developer) may ask at once: one builds, the other waits and reuses.
exec 9>"$BASE/.lock"
flock 9

version="$(kube_source_version)"
OUT="$BASE/${version}_r$RECIPE"
have_all=1
for b in "${BINARIES[@]}"; do [[ -x $OUT/bin/$b ]] || have_all=0; done
if [[ $have_all == 1 ]]; then
  ln -sfn "$OUT" "$BASE/current"
  exit 0
fi

log "building Kubernetes' e2e suite $version from source (one-time, ~12 minutes on 2 cores)"
WORK="$BASE/build"
kube_source_unpack "$WORK" "$version"
LDFLAGS="$(kube_ldflags "$version")"

log "generating test/e2e/generated/bindata.go"
go build -o "$WORK/go-bindata" ./vendor/github.com/go-bindata/go-bindata/go-bindata
"$WORK/go-bindata" -nometadata -o test/e2e/generated/bindata.go -pkg generated \
  -ignore .jpg -ignore .png -ignore .md -ignore 'BUILD(\.bazel)?' \
  "test/conformance/testdata/..." "test/e2e/testing-manifests/..." \
  "test/e2e_node/testing-manifests/..." "test/images/..." "test/fixtures/..."

mkdir -p "$OUT.tmp/bin"
log "go build agnhost"
go build -ldflags "$LDFLAGS" -o "$OUT.tmp/bin/agnhost" ./test/images/agnhost
# The conntrack regression spec's server (Go standard library only).
go build -ldflags "-s -w" -o "$OUT.tmp/bin/regression-issue-74839" ./test/images/regression-issue-74839
log "go build ginkgo"
go build -ldflags "-s -w" -o "$OUT.tmp/bin/ginkgo" ./vendor/github.com/onsi/ginkgo/ginkgo
log "go test -c ./test/e2e (the longest part)"
go test -c -ldflags "$LDFLAGS" -o "$OUT.tmp/bin/e2e.test" ./test/e2e
"$OUT.tmp/bin/agnhost" --help >/dev/null || { log "agnhost does not run"; exit 1; }
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
ln -sfn "$OUT" "$BASE/current"
cd /; rm -rf "$WORK"
log "built into $OUT"
