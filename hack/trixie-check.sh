#!/usr/bin/env bash
# Proof that this checkout sets up and runs on Debian 13 (trixie), without a Debian 13
# machine: a trixie root made with mmdebstrap, entered with chroot, in which the README's
# commands run exactly as on a fresh machine:
#
#   1. make setup             Debian 13's packages (OVS 3.5, OVN 25.03, containerd, etcd),
#                             Kubernetes 1.20 built from Debian 12's source with trixie's Go
#   2. make demo              a 2-node sandbox, two pods pinging across nodes; then down
#   3. pytest                 the unit, contract and functional tests
#
# Not part of `make test` (it takes 10-20 minutes cold); rerun it after changing the setup
# scripts or the lab. Run it under the heavy-run lock on a shared machine.
#
# The checkout is mounted read-only under an overlay (its .venv hidden), so the root's own
# venv and build products never touch the checkout. The kernel, the network namespace, the
# process ids and the cgroup hierarchies are the host's.
#
# Cached under $OVNK_CACHE/trixie: rootfs.tar (the pristine mmdebstrap result) and root/
# (the working root, with its own /var/cache/ovnk: a rerun skips the Kubernetes build).
#
#   hack/trixie-check.sh [--fresh] [--rebuild] [--shell] [--suite S] [pytest args...]
#     --fresh    start from the pristine root again (a cold setup, as on a new machine)
#     --rebuild  make a new pristine root with mmdebstrap (implies --fresh)
#     --shell    open a shell inside the root after the setup instead of the checks
#     --suite S  another Debian release (bookworm: a cold Debian 12 setup, timed the same way),
#                cached under $OVNK_CACHE/S
#     pytest args replace the default test selection (tests/unit tests/contract tests/functional)
set -euo pipefail

CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
log() { printf '[trixie-check] %s\n' "$*" >&2; }
# shellcheck source=hack/apt-private.sh
. "$CHECKOUT/hack/apt-private.sh"

fresh=0 rebuild=0 shell=0 suite=trixie
tests=()
while (($#)); do
  case "$1" in
    --fresh) fresh=1 ;;
    --rebuild) rebuild=1; fresh=1 ;;
    --shell) shell=1 ;;
    --suite) suite=$2; shift ;;
    *) tests+=("$1") ;;
  esac
  shift
done
((${#tests[@]})) || tests=(tests/unit tests/contract tests/functional)
BASE="$OVNK_CACHE/$suite"
ROOTFS="$BASE/root"

[[ $(id -u) == 0 ]] || { log "run as root (chroot, mounts, namespaces)"; exit 1; }
command -v mmdebstrap >/dev/null || {
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
}
mkdir -p "$BASE"
exec 9>"$BASE/.lock"
flock -n 9 || { log "another trixie check runs (lock $BASE/.lock)"; exit 1; }

mirror="$(debian_mirror)"
security="${mirror%/debian}/debian-security"
if [[ $rebuild == 1 || ! -e $BASE/rootfs.tar ]]; then
  log "making a Debian $suite root with mmdebstrap ($mirror)"
  # What a machine of the project's kind has before setup: make, git, Python 3, mount, ip and apt.
  mmdebstrap --variant=minbase --format=tar --include=make,git,python3,ca-certificates,procps,mount,iproute2 \
    "$suite" "$BASE/rootfs.tar.tmp" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
    "deb $security $suite-security main"
  mv "$BASE/rootfs.tar.tmp" "$BASE/rootfs.tar"
fi
if [[ $fresh == 1 && -d $ROOTFS ]]; then
  log "removing the working root (--fresh)"
  rm -rf "$ROOTFS"
fi
if [[ ! -d $ROOTFS ]]; then
  mkdir -p "$ROOTFS.tmp"
  tar -C "$ROOTFS.tmp" -xf "$BASE/rootfs.tar"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# This machine's own trust settings (its package registries may sit behind a TLS proxy with a
# local CA), as a Debian 13 machine of the same kind would have them: extra CA certificates and
# pip's pointer to the system bundle.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
fi
[[ -e /etc/pip.conf ]] && cp /etc/pip.conf "$ROOTFS/etc/pip.conf"

# The overlay: the checkout below, the root's writes (its .venv, build products) above.
UPPER="$BASE/src-upper" OVERLAY_WORK="$BASE/src-work"
if [[ $fresh == 1 ]]; then rm -rf "$UPPER" "$OVERLAY_WORK"; fi
mkdir -p "$UPPER" "$OVERLAY_WORK" "$ROOTFS/src"
# The checkout's own venv is the host's: hide it (an overlay whiteout) so setup makes the root's.
[[ -e $UPPER/.venv ]] || mknod "$UPPER/.venv" c 0 0

LOGDIR="$BASE/logs"; mkdir -p "$LOGDIR"
LOG="$LOGDIR/$(date +%Y%m%d-%H%M%S).log"
log "log: $LOG"

# Everything below runs in a private mount namespace whose root is the Debian root (pivot_root,
# not chroot: the sandbox enters mount namespaces it creates with nsenter, which puts a process at
# its namespace's root; a chroot would be left there). The mounts vanish with the namespace.
inner="$(cat <<'INNER'
set -euo pipefail
log() { printf '[trixie-check] %s\n' "$*" >&2; }
mount --make-rprivate /
mount --bind "$ROOTFS" "$ROOTFS"
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --rbind /sys "$ROOTFS/sys"
mount -t tmpfs -o mode=755 tmpfs "$ROOTFS/run"
mount -t overlay overlay -o "lowerdir=$CHECKOUT,upperdir=$UPPER,workdir=$OVERLAY_WORK" "$ROOTFS/src"
cd "$ROOTFS"
mkdir -p .host
pivot_root . .host
cd /
umount -l /.host
rmdir /.host

in_root() {
  /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "cd /src && $1"
}
export -f in_root

log "Debian $(cat /etc/debian_version) root; checkout at /src (overlay)"
start=$SECONDS
in_root 'make setup'
log "make setup: $((SECONDS - start)) s"
in_root 'head -1 /etc/os-release; .venv/bin/python -c "from ovnk_lab import paths; print(paths.ovn_install().label)"'
if [[ $SHELL_ONLY == 1 ]]; then
  in_root 'exec bash -i' </dev/tty >/dev/tty 2>&1
  exit 0
fi

# The demo and the tests, in the host's network namespace like any other checkout's (the demo
# sandbox has its own prefix; `ovnk sandbox` refuses a subnet the host already uses). Not in a
# network namespace of their own: there, binding the sandbox nodes' mount namespace files
# (`unshare --mount=<file>`) fails with EINVAL in a few percent of tries, in bursts that retries
# do not get through (kernel 6.18; never in the initial network namespace).
start=$SECONDS
status=0
in_root "make demo SANDBOX_FLAGS=--prefix=trixie" || status=$?
in_root ".venv/bin/ovnk sandbox --prefix trixie down" || status=$?
log "make demo (up, ping, down): $((SECONDS - start)) s, status $status"
[[ $status == 0 ]] || exit "$status"
start=$SECONDS
in_root ".venv/bin/python -m pytest -q $TESTS" || status=$?
log "pytest $TESTS: $((SECONDS - start)) s, status $status"
exit "$status"
INNER
)"
export ROOTFS CHECKOUT UPPER OVERLAY_WORK SHELL_ONLY=$shell TESTS="${tests[*]}"
set +e
unshare --mount --propagation private /bin/bash -c "$inner" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [[ $status == 0 ]]; then
  log "Debian $suite check passed ($LOG)"
else
  log "Debian $suite check FAILED with status $status ($LOG)"
fi
exit "$status"
