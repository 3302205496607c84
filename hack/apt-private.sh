# shellcheck shell=bash
# Sourced by the setup scripts (not executed): private apt configurations that
# name a Debian suite explicitly, so the scripts fetch the same packages on a
# Debian 12 and a Debian 13 machine, without touching the system's apt state.
#
#   apt_private <dir name> "<types>" <suite>...
#
# writes $OVNK_CACHE/<dir name>/sources.list.d/debian.sources (mirror and
# keyring taken from the machine's own Debian entry), refreshes the package
# lists when the entry changed or they are missing or older than a day, and
# sets APT_OPTS for apt-get/apt-cache calls that use only this list.

# The codename of the running Debian release (bookworm, trixie, ...).
debian_codename() {
  local codename=""
  if [[ -r /etc/os-release ]]; then
    codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
  fi
  [[ -n $codename ]] || { printf 'cannot tell the Debian release from /etc/os-release\n' >&2; return 1; }
  printf '%s\n' "$codename"
}

# The URI of the machine's main Debian archive (not the security archive).
debian_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    uri="$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) { print $i; exit } }' "$f")"
    [[ -n $uri ]] && break
  done
  if [[ -z $uri && -e /etc/apt/sources.list ]]; then
    uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*debian\/?$/) { print $i; exit } }' \
           /etc/apt/sources.list)"
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

apt_private() {
  local name=$1 types=$2; shift 2
  local dir="$OVNK_CACHE/$name" entry keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$dir/sources.list.d" "$dir/lists/partial" "$dir/cache/archives/partial"
  APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$dir/sources.list.d"
            -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Dir::State::status=/dev/null")
  entry="$(printf 'Types: %s\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
           "$types" "$(debian_mirror)" "$*" "$keyring")"
  local list="$dir/sources.list.d/debian.sources"
  # Older versions of these scripts wrote other file names: only our one entry may be active.
  find "$dir/sources.list.d" -type f ! -name debian.sources -delete
  local fresh=0
  if [[ -e $list && "$(cat "$list")" == "$entry" ]] && \
     [[ -n "$(find "$dir/lists" -maxdepth 1 -name '*Release' -mmin -1440 -print -quit)" ]]; then
    fresh=1
  fi
  if [[ $fresh == 0 ]]; then
    printf '%s\n' "$entry" > "$list"
    apt-get "${APT_OPTS[@]}" update -qq || apt-get "${APT_OPTS[@]}" update -qq
  fi
}
