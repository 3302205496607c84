#!/usr/bin/env bash
# Idempotent setup of everything the tests and the sandbox need on a fresh
# Debian 12 or Debian 13 machine: apt packages, a current Open vSwitch and OVN
# where the packages are older (Debian 12: hack/get-ovn.sh), the Python venv,
# Kubernetes 1.20 binaries built from Debian 12's source package, helm v3,
# cnitool and kubectl 1.20. docs/testbed.md says what is installed where.
#
# Binaries are cached outside the checkout (OVNK_CACHE, default
# /var/cache/ovnk) so later runs and fresh clones reuse them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
mkdir -p "$OVNK_CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(
  openvswitch-switch openvswitch-common ovn-central ovn-host ovn-common
  iproute2 ethtool iputils-ping tcpdump iptables nftables conntrack
  etcd-server etcd-client
  golang-go golang-github-modern-go-reflect2-dev golang-github-appc-cni-dev
  containerd runc busybox-static containernetworking-plugins
  openssl gcc libc6-dev dpkg-dev shellcheck util-linux procps psmisc socat
  python3-venv python3-pip patchelf
  # libFuzzer (clang's runtime) for the native CNI shim's fuzz test (tests/functional/cni/test_native_fuzz.py);
  # llvm-defaults' names, so Debian 12 and 13 each install their own clang
  clang libclang-rt-dev
  # dnsmasq: the sandbox's outside host answers DNS (egressfirewall's dnsName rules)
  dnsmasq-base
  # OpenBSD nc for the e2e suite's agnhost image (Kubernetes' specs run `nc -u`; busybox's nc has no UDP)
  netcat-openbsd
  # mmdebstrap: the ovnk image without a container daemon (lab/ovnk_lab/ovnk_image.py)
  mmdebstrap
)

missing_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      printf '%s\n' "$pkg"
    fi
  done
}

install_apt() {
  local missing
  missing="$(missing_packages)"
  if [[ -z "$missing" ]]; then
    return
  fi
  log "installing Debian packages: $(echo "$missing" | tr '\n' ' ')"
  export DEBIAN_FRONTEND=noninteractive
  # Package maintainer scripts try to start services; there is no init
  # system here, so tell invoke-rc.d that nothing may start.
  local policy=/usr/sbin/policy-rc.d
  local made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
  fi
  apt-get update -qq || apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [[ $made_policy == 1 ]]; then rm -f "$policy"; fi
}

install_venv() {
  local venv="$ROOT/.venv" stamp
  stamp="$venv/.ovnk-installed-$(cat "$ROOT/pyproject.toml" "$ROOT/lab/pyproject.toml" | sha256sum | cut -c1-16)"
  if [[ -x $venv/bin/python && -e $stamp ]]; then
    return
  fi
  log "creating the Python venv in .venv"
  local py=""
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$(command -v "$cand")"; break
    fi
  done
  [[ -n $py ]] || { log "no Python >= 3.11 found"; exit 1; }
  # Resolve pyenv shims to the real interpreter: the shim costs ~100 ms per start.
  py="$("$py" -c 'import sys; print(sys.executable)')"
  [[ -d $venv ]] || "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel >/dev/null
  "$venv/bin/pip" install -q -e "${ROOT}[test]"
  # The lab (sandbox, test bed) is its own distribution: the product never contains it.
  "$venv/bin/pip" install -q -e "${ROOT}/lab"
  rm -f "$venv"/.ovnk-installed-*
  touch "$stamp"
}

install_apt
"$ROOT/hack/get-ovn.sh"
"$ROOT/hack/build-kube.sh"
"$ROOT/hack/get-tools.sh"
install_venv
# The native CNI shim (cni/native/shim.c); a no-op when built from the same source already.
"$ROOT/.venv/bin/ovnk" cni build-shim >/dev/null
log "setup complete (cache: $OVNK_CACHE)"
