#!/usr/bin/env bash
# `make conformance`: Kubernetes' own [sig-network] e2e specs (hack/build-kube-e2e.sh) on a
# 2-node sandbox of their own, with cluster DNS, 3 specs at a time; the sandbox is removed
# afterwards, whatever the result. Arguments go to `ovnk sandbox conformance` (e.g. --quick,
# --focus REGEX, --parallel N). Report: $OVNK_CONFORMANCE_REPORT (default
# /var/lib/ovnk/conformance/conf). docs/conformance.md has the results and the skips.
# On a shared machine run it under the heavy-run lock (flock /work/.heavy.lock make conformance).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OVNK="$ROOT/.venv/bin/ovnk"
PY="$ROOT/.venv/bin/python"
PREFIX="${OVNK_CONFORMANCE_PREFIX:-conf}"
REPORT="${OVNK_CONFORMANCE_REPORT:-/var/lib/ovnk/conformance/$PREFIX}"
# An underlay no host address is in (other sandboxes may be up).
SUBNET="$("$PY" -c 'from ovnk_lab import hostnet; print(hostnet.free_underlay_subnet([f"172.28.{i}.0/24" for i in range(250)]))')"

"$OVNK" sandbox --prefix "$PREFIX" up --nodes 2 --cluster-dns --subnet "$SUBNET" >/dev/null
trap '"$OVNK" sandbox --prefix "$PREFIX" down' EXIT
"$OVNK" sandbox --prefix "$PREFIX" conformance --parallel 3 --report-dir "$REPORT" "$@"
