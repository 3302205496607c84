# shellcheck shell=bash
# Sourced (not executed) by hack/build-kube.sh and hack/build-kube-e2e.sh: Debian 12
# (bookworm)'s `kubernetes` source package (1.20), fetched and unpacked ready for an
# offline GOPATH-mode build with the machine's Go. Needs OVNK_CACHE set and
# hack/apt-private.sh sourced.
#
#   kube_source_version          prints the newest source version in the private list
#   kube_source_unpack DIR VER   fetches VER into DIR, unpacks it to DIR/src, sets up GOPATH
#                                and the Go environment, and cds into the package root
#                                ($GOPATH/src/k8s.io/kubernetes); GOCACHE is DIR/gocache
#   kube_ldflags VER             the -ldflags that stamp the upstream version into the binaries
#
# The same source on Debian 12 and Debian 13: the private list names the bookworm suites
# explicitly (trixie's `kubernetes` source package is 1.32 and holds kubectl only). On
# Debian 13 it builds with trixie's Go 1.24 (GOTOOLCHAIN=local keeps it from looking for
# another toolchain). The system's apt state is not touched.

# Binary packages too: hack/get-tools.sh takes kubectl 1.20 from bookworm's kubernetes-client.
kube_source_list() {
  apt_private apt-src "deb deb-src" bookworm bookworm-updates
}

kube_source_version() {
  local v best=""
  kube_source_list >&2
  for v in $(apt-cache "${APT_OPTS[@]}" showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2}'); do
    if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done
  [[ -n $best ]] || { printf 'source package kubernetes not found in bookworm\n' >&2; return 1; }
  printf '%s\n' "$best"
}

kube_source_unpack() {
  local dir=$1 version=$2
  kube_source_list
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$version" >/dev/null \
     && dpkg-source --no-check -x ./kubernetes_*.dsc src >/dev/null)
  cd "$dir/src" || return 1
  # Debian's vendored reflect2 1.0.1 crashes under Go >= 1.18; use Debian's packaged copy.
  rm -rf vendor/github.com/modern-go/reflect2
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  # GOTOOLCHAIN=local: Go >= 1.21 (Debian 13) would otherwise try to fetch the toolchain go.mod asks for.
  export GO111MODULE=off GOPATH="$PWD/.go" GOPROXY=off CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOCACHE="$dir/gocache"
  unset GOFLAGS
  cd .go/src/k8s.io/kubernetes || return 1
}

# Debian versions look like 1.20.5+really1.20.2-1.1+deb12u1: the real upstream version
# follows "+really" when present. Two version packages: component-base's (the binaries'
# --version) and client-go's, which the apiserver's /version endpoint reads (through the
# aggregator). GOPATH mode: the package paths include vendor/.
kube_ldflags() {
  local version=$1 upstream major minor vpkg flags="-s -w"
  upstream="${version#*+really}"; upstream="${upstream%%-*}"; upstream="${upstream%%+*}"
  major="${upstream%%.*}"; minor="${upstream#*.}"; minor="${minor%%.*}"
  for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    flags+=" -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
  done
  printf '%s\n' "$flags"
}
