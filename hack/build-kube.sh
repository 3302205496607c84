#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
# (plus the pause binary) from Debian's `kubernetes` source package, offline,
# with Debian's Go. Cached under $OVNK_CACHE/kube/<source version>/ so the
# ~5-minute cold build happens once per machine.
#
# The source list is derived from the machine's own apt configuration (its
# Debian entry, turned into deb-src) in a private directory; the system's
# apt state is not touched.
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
log() { printf '[build-kube] %s\n' "$*" >&2; }

APT_DIR="$OVNK_CACHE/apt-src"
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"

APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
          -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache")

write_source_list() {
  local out="$APT_DIR/sources.list.d/debian-src.sources" found=0 f
  : > "$out.tmp"
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    if grep -qiE '^URIs:.*debian' "$f"; then
      sed -E 's/^Types:.*/Types: deb-src/' "$f" >> "$out.tmp"; printf '\n' >> "$out.tmp"; found=1
    fi
  done
  if [[ $found == 0 && -e /etc/apt/sources.list ]]; then
    # One-line format: turn the deb lines of Debian mirrors into deb-src.
    grep -E '^deb[[:space:]].*debian' /etc/apt/sources.list | sed -E 's/^deb /deb-src /' \
      > "$APT_DIR/sources.list.d/debian-src.list" || true
    rm -f "$out.tmp"; return
  fi
  [[ $found == 1 ]] || { log "no Debian entry in the apt configuration"; exit 1; }
  mv "$out.tmp" "$out"
}

source_version() {
  apt-cache "${APT_OPTS[@]}" showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}'
}

write_source_list
version="$(source_version || true)"
if [[ -z $version ]]; then
  apt-get "${APT_OPTS[@]}" update -qq
  version="$(source_version)"
fi
[[ -n $version ]] || { log "source package kubernetes not found"; exit 1; }

OUT="$OVNK_CACHE/kube/$version"
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
export GO111MODULE=off GOPATH="$PWD/.go" GOPROXY=off CGO_ENABLED=0 GOFLAGS=-mod=vendor
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
vpkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
LDFLAGS="-s -w -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"

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
