#!/usr/bin/env bash
# A current Open vSwitch and OVN for the test bed on machines whose Debian
# packages are older (Debian 12: OVS 3.1.0, OVN 23.03.1).
#
# When the installed packages are older than OVS $MIN_OVS / OVN $MIN_OVN,
# this installs Debian 13 (trixie)'s own OVS and OVN binary packages beside
# them, never over them, into a private prefix:
#
#   $OVNK_CACHE/ovn/ovs-<v>_ovn-<v>-<key>/{bin,sbin,lib,share/openvswitch,share/ovn}
#   $OVNK_CACHE/ovn/current -> the newest complete one
#
# Trixie's binaries need trixie's C library, so the prefix holds the shared
# libraries they link (glibc included, the whole dependency closure from
# trixie) and every executable is pointed at them: its ELF interpreter is the
# prefix's ld.so and its RPATH the prefix's lib/ (patchelf). Nothing else on
# the machine changes. <key> hashes the exact package versions and this
# recipe: a changed package makes a new prefix, an unchanged one is reused.
# The lab (lab/ovnk_lab/paths.py) runs every OVS/OVN daemon and tool from the
# newest installation it finds (this one or the packages); OVNK_OVN_PREFIX
# picks another. docs/testbed.md says why binaries and not a source build.
#
# On a machine whose packages are new enough (Debian 13) it does nothing.
set -euo pipefail

export OVNK_CACHE="${OVNK_CACHE:-/var/cache/ovnk}"
log() { printf '[get-ovn] %s\n' "$*" >&2; }
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/apt-private.sh
. "$HACK/apt-private.sh"

MIN_OVS=3.3
MIN_OVN=24.03
SUITE=trixie
PACKAGES=(openvswitch-common openvswitch-switch ovn-common ovn-central ovn-host)
# Bump when the way the prefix is assembled changes.
RECIPE=1

installed_version() {
  dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'
}

new_enough() {  # new_enough <package> <minimum upstream version>
  local v; v="$(installed_version "$1")"
  [[ -n $v ]] && dpkg --compare-versions "$v" ge "$2"
}

if new_enough openvswitch-switch "$MIN_OVS" && new_enough ovn-central "$MIN_OVN"; then
  exit 0
fi

apt_private apt-trixie deb "$SUITE"

# Candidate versions of the packages named, one "package version" line each.
candidates() {
  apt-cache "${APT_OPTS[@]}" policy "$@" 2>/dev/null \
    | awk '/^[^ ].*:$/ { pkg = substr($1, 1, length($1) - 1) } $1 == "Candidate:" { print pkg, $2 }'
}

# The shared-library packages the executables need, recursively: every Depends/Pre-Depends
# that is a library (lib*, zlib1g); the first of alternatives. Tools (python3, procps, ...)
# are not followed: the test bed runs only the compiled daemons and utilities.
library_closure() {
  local -A seen=()
  local level=("$@") next dep
  while ((${#level[@]})); do
    next=()
    for dep in $(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests --no-conflicts \
                   --no-breaks --no-replaces --no-enhances "${level[@]}" 2>/dev/null \
                 | awk '{ t = $1; alt = sub(/^[|]/, "", t) }
                        t != "Depends:" && t != "PreDepends:" { next }
                        in_alt { in_alt = alt; next }   # a later alternative of an "A | B" dependency
                        { print $2; in_alt = alt }' \
                 | sed 's/:any$//' | grep -E '^(lib|zlib1g$)' || true); do
      [[ -n ${seen[$dep]:-} ]] && continue
      seen[$dep]=1; next+=("$dep")
    done
    level=("${next[@]}")
  done
  printf '%s\n' "${!seen[@]}" | sort
}

mapfile -t libraries < <(library_closure "${PACKAGES[@]}")
declare -A version_of=()
while read -r pkg version; do
  version_of[$pkg]=$version
done < <(candidates "${PACKAGES[@]}" "${libraries[@]}")
pins=()
for pkg in "${PACKAGES[@]}" "${libraries[@]}"; do
  version=${version_of[$pkg]:-}
  [[ -n $version && $version != "(none)" ]] || { log "$pkg not found in Debian $SUITE"; exit 1; }
  pins+=("$pkg=$version")
done
upstream() { local v=${1#*:}; v=${v%%-*}; printf '%s' "${v%%+*}"; }
ovs_version="$(upstream "${version_of[openvswitch-switch]}")"
ovn_version="$(upstream "${version_of[ovn-central]}")"
key="$( { printf 'recipe %s\n' "$RECIPE"; printf '%s\n' "${pins[@]}"; } | sha256sum | cut -c1-12)"
ROOT="$OVNK_CACHE/ovn"
DEST="$ROOT/ovs-${ovs_version}_ovn-${ovn_version}-$key"
mkdir -p "$ROOT"

# One installer at a time (several checkouts share the cache).
exec 9>"$ROOT/.lock"
flock 9
if [[ -e $DEST/ovnk-install ]]; then
  ln -sfn "$(basename "$DEST")" "$ROOT/current"
  exit 0
fi

log "installing Debian $SUITE's OVS $ovs_version and OVN $ovn_version into $DEST"
WORK="$(mktemp -d "$ROOT/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get "${APT_OPTS[@]}" download -qq "${pins[@]}" >/dev/null 2>&1) \
  || (cd "$WORK" && apt-get "${APT_OPTS[@]}" update -qq && apt-get "${APT_OPTS[@]}" download -qq "${pins[@]}" >/dev/null)
for deb in "$WORK"/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done

multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
STAGE="$DEST.tmp"
# A leftover incomplete $DEST would sit first on the executables' RPATH during the checks below.
rm -rf "$STAGE" "$DEST"; mkdir -p "$STAGE/bin" "$STAGE/sbin" "$STAGE/lib" "$STAGE/share"
# Trixie is merged-/usr: every library is under usr/lib/<multiarch>.
cp -a "$WORK/root/usr/lib/$multiarch/." "$STAGE/lib/"
cp -a "$WORK/root/usr/share/openvswitch" "$WORK/root/usr/share/ovn" "$STAGE/share/"

is_elf() { [[ "$(head -c4 "$1" | od -An -c | tr -d ' ')" == '177ELF' ]]; }
# ovs-vswitchd lives in /usr/lib/openvswitch-switch (Debian's alternatives pick it or the DPDK build).
for exe in "$WORK"/root/usr/bin/* "$WORK"/root/usr/sbin/* "$WORK/root/usr/lib/openvswitch-switch/ovs-vswitchd"; do
  [[ -f $exe && ! -L $exe ]] && is_elf "$exe" || continue   # python tools (ovn-detrace, ...) are left out
  case "$exe" in
    */sbin/*|*/ovs-vswitchd) install -m 0755 "$exe" "$STAGE/sbin/" ;;
    *) install -m 0755 "$exe" "$STAGE/bin/" ;;
  esac
done

interp="$(patchelf --print-interpreter "$STAGE/sbin/ovs-vswitchd")"
[[ -e $STAGE/lib/$(basename "$interp") ]] || { log "no $(basename "$interp") among trixie's libraries"; exit 1; }
for exe in "$STAGE"/bin/* "$STAGE"/sbin/*; do
  # RPATH (not RUNPATH): it also applies to the libraries' own dependencies.
  patchelf --set-interpreter "$DEST/lib/$(basename "$interp")" --force-rpath --set-rpath "$DEST/lib" "$exe"
done

# Every library must come from the prefix: one from the host's (older) glibc world would crash.
loader="$STAGE/lib/$(basename "$interp")"
for exe in "$STAGE"/bin/* "$STAGE"/sbin/*; do
  resolved="$("$loader" --library-path "$STAGE/lib" --list "$exe")" \
    || { log "$(basename "$exe") does not load: $resolved"; exit 1; }
  outside="$(printf '%s\n' "$resolved" | awk '/=>/ && $3 !~ "^'"$STAGE"'/lib/" {print}' | grep -v 'linux-vdso' || true)"
  [[ -z $outside ]] || { log "$(basename "$exe") would load libraries from outside the prefix: $outside"; exit 1; }
done

{
  printf 'suite=%s\novs_version=%s\novn_version=%s\nrecipe=%s\n' "$SUITE" "$ovs_version" "$ovn_version" "$RECIPE"
  printf 'package=%s\n' "${pins[@]}"
} > "$STAGE/ovnk-install.tmp"
rm -rf "$DEST"; mv "$STAGE" "$DEST"
"$DEST/sbin/ovs-vswitchd" --version | grep -q "$ovs_version" || { log "ovs-vswitchd does not run"; rm -rf "$DEST"; exit 1; }
"$DEST/bin/ovn-northd" --version | grep -q "$ovn_version" || { log "ovn-northd does not run"; rm -rf "$DEST"; exit 1; }
mv "$DEST/ovnk-install.tmp" "$DEST/ovnk-install"
ln -sfn "$(basename "$DEST")" "$ROOT/current"
log "installed OVS $ovs_version and OVN $ovn_version ($(du -sh "$DEST" | cut -f1))"
