#!/usr/bin/env bash
# A kind cluster running ovnk instead of kindnet and kube-proxy: creates the cluster
# (disableDefaultCNI, kubeProxyMode none), builds and loads the image (hack/Containerfile),
# installs charts/ovnk with the chosen plugins and waits until every node is Ready.
# Needs docker or podman, kind, kubectl and helm on PATH (see docs/kind.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NAME="ovnk"
WORKERS=2
CONTROL_PLANES=1
MTU=1400
RAFT=false
SSL=false
IMAGE=""
DAEMONLESS=false
DELETE=false
DRY_RUN=false
NAMESPACE="ovn-kubernetes"
POD_SUBNET="10.244.0.0/16"
HOST_PREFIX=24
SERVICE_SUBNET="10.96.0.0/16"
TIMEOUT=600
PLUGINS=()
DEFAULT_IMAGE="localhost/ovnk:dev"
HELM="${HELM:-helm}"
KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
RUNTIME="${CONTAINER_RUNTIME:-}"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Creates a kind cluster with ovnk as its CNI and service implementation.

  -cn, --cluster-name NAME  kind cluster name (default: $CLUSTER_NAME)
  -wk, --num-workers N      worker nodes (default: $WORKERS)
  -p,  --plugin NAME        enable the first-party plugin plugins/NAME (repeatable)
  -mtu N                    MTU of pod interfaces (default: $MTU)
  --ovn-db-raft             3 control-plane nodes, the OVN databases as a 3-member RAFT
                            cluster and 3 controller replicas (leader election)
  --ssl                     SSL between the OVN databases and their clients (a throwaway CA
                            made with openssl, stored as Secrets)
  --image IMAGE             use this image instead of building hack/Containerfile
  --daemonless              build the image without docker/podman (hack/build-image.sh: the
                            same build, cache and image the sandbox's chart tests use) and
                            load it with kind load image-archive
  -n,  --namespace NS       namespace of the release (default: $NAMESPACE)
  --timeout SECONDS         how long to wait for readiness (default: $TIMEOUT)
  --delete                  delete the cluster and exit
  --dry-run                 print the kind config and the chart values, change nothing
  -h,  --help               this text

Environment: CONTAINER_RUNTIME (docker or podman; default: whichever is installed),
HELM, KIND, KUBECTL (the binaries).
EOF
}

die() { echo "kind.sh: error: $*" >&2; exit 1; }
log() { echo "kind.sh: $*" >&2; }

first_party_plugins() {
    local dir
    for dir in "$ROOT"/plugins/*/; do
        [ -f "$dir/__init__.py" ] && basename "$dir"
    done
    return 0
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            -cn | --cluster-name) CLUSTER_NAME="${2:?$1 needs a value}"; shift ;;
            -wk | --num-workers) WORKERS="${2:?$1 needs a value}"; shift ;;
            -p | --plugin) PLUGINS+=("${2:?$1 needs a value}"); shift ;;
            -mtu | --mtu) MTU="${2:?$1 needs a value}"; shift ;;
            --ovn-db-raft) RAFT=true ;;
            --ssl) SSL=true ;;
            --image) IMAGE="${2:?$1 needs a value}"; shift ;;
            --daemonless) DAEMONLESS=true ;;
            -n | --namespace) NAMESPACE="${2:?$1 needs a value}"; shift ;;
            --timeout) TIMEOUT="${2:?$1 needs a value}"; shift ;;
            --delete) DELETE=true ;;
            --dry-run) DRY_RUN=true ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option '$1'" ;;
        esac
        shift
    done
    [[ "$WORKERS" =~ ^[0-9]+$ ]] || die "--num-workers needs a number, not '$WORKERS'"
    [[ "$MTU" =~ ^[0-9]+$ ]] || die "-mtu needs a number, not '$MTU'"
    [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds, not '$TIMEOUT'"
    local plugin known
    known="$(first_party_plugins | tr '\n' ' ')"
    for plugin in ${PLUGINS[@]+"${PLUGINS[@]}"}; do
        [ -f "$ROOT/plugins/$plugin/__init__.py" ] \
            || die "no first-party plugin '$plugin' (plugins/$plugin/); known: ${known:-none}"
    done
    if [ "$RAFT" = true ]; then
        CONTROL_PLANES=3
    fi
    if [ "$DAEMONLESS" = true ] && [ -n "$IMAGE" ]; then
        die "--daemonless builds the image: it does not go with --image"
    fi
}

# The name hack/build-image.sh gives the image of the current sources (nothing is built).
daemonless_image_name() {
    local app key
    app="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/ovnk/Chart.yaml")"
    key="$("$ROOT/hack/build-image.sh" --key)"
    echo "localhost/ovnk:$app-$key"
}

kind_config() {
    local i
    cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # ovnk is the CNI and implements Services: no kindnet, no kube-proxy.
  disableDefaultCNI: true
  kubeProxyMode: none
  podSubnet: $POD_SUBNET
  serviceSubnet: $SERVICE_SUBNET
nodes:
EOF
    for ((i = 0; i < CONTROL_PLANES; i++)); do echo "  - role: control-plane"; done
    for ((i = 0; i < WORKERS; i++)); do echo "  - role: worker"; done
}

# $1: API server host, $2: port, $3: image repository, $4: tag.
chart_values() {
    local plugin
    cat <<EOF
image:
  repository: $3
  tag: "$4"
  pullPolicy: IfNotPresent
apiServer:
  host: $1
  port: $2
clusterSubnets: $POD_SUBNET/$HOST_PREFIX
serviceCIDR: $SERVICE_SUBNET
mtu: $MTU
ovnDb:
  mode: $([ "$RAFT" = true ] && echo raft || echo standalone)
  ssl:
    enabled: $SSL
controller:
  replicas: $CONTROL_PLANES
plugins:
EOF
    if [ ${#PLUGINS[@]} -eq 0 ]; then
        echo "  {}"
    fi
    for plugin in ${PLUGINS[@]+"${PLUGINS[@]}"}; do
        printf '  %s:\n    enabled: true\n' "$plugin"
    done
}

detect_runtime() {
    if [ -z "$RUNTIME" ]; then
        if command -v docker >/dev/null 2>&1; then RUNTIME=docker
        elif command -v podman >/dev/null 2>&1; then RUNTIME=podman
        else die "neither docker nor podman is installed"
        fi
    fi
    if [ "$RUNTIME" = podman ]; then
        export KIND_EXPERIMENTAL_PROVIDER=podman
    fi
}

# A throwaway CA, a server and a client certificate, stored as the chart's default Secrets.
# OVS checks that the peer's certificate is signed by the CA; it does not match host names.
# $1: a scratch directory for the keys.
create_ssl_secrets() {
    local dir="$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -subj "/CN=ovnk-ovn-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    local who
    for who in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=ovnk-ovn-$who" -keyout "$dir/$who.key" -out "$dir/$who.csr" 2>/dev/null
        openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
            -days 365 -out "$dir/$who.crt" 2>/dev/null
        "$KUBECTL" -n "$NAMESPACE" create secret tls "ovnk-ovn-$who" --cert="$dir/$who.crt" --key="$dir/$who.key" \
            --dry-run=client -o yaml | "$KUBECTL" apply -f -
    done
    "$KUBECTL" -n "$NAMESPACE" create secret generic ovnk-ovn-ca --from-file=ca.crt="$dir/ca.crt" \
        --dry-run=client -o yaml | "$KUBECTL" apply -f -
}

main() {
    parse_args "$@"
    local image="${IMAGE:-$DEFAULT_IMAGE}"
    if [ "$DAEMONLESS" = true ]; then
        image="$(daemonless_image_name)"
    fi
    local repository="${image%:*}" tag="${image##*:}"
    if [ "$repository" = "$image" ] || [[ "$tag" == */* ]]; then
        repository="$image"
        tag=latest
    fi
    if [ "$DRY_RUN" = true ]; then
        echo "# kind config"
        kind_config
        echo "# chart values"
        chart_values "$CLUSTER_NAME-control-plane" 6443 "$repository" "$tag"
        return 0
    fi
    detect_runtime
    if [ "$DELETE" = true ]; then
        "$KIND" delete cluster --name "$CLUSTER_NAME"
        return 0
    fi
    local workdir
    workdir="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $workdir now, not when the trap runs
    trap "rm -rf '$workdir'" EXIT

    log "creating kind cluster $CLUSTER_NAME ($CONTROL_PLANES control-plane, $WORKERS worker nodes)"
    kind_config > "$workdir/kind.yaml"
    "$KIND" create cluster --name "$CLUSTER_NAME" --config "$workdir/kind.yaml" --wait 0s
    "$KIND" export kubeconfig --name "$CLUSTER_NAME"

    if [ "$DAEMONLESS" = true ]; then
        local bundle
        log "building $image without a daemon (hack/build-image.sh; cached)"
        bundle="$("$ROOT/hack/build-image.sh" | head -n 1)"
        log "loading $bundle into the cluster"
        "$KIND" load image-archive "$bundle" --name "$CLUSTER_NAME"
    elif [ -z "$IMAGE" ]; then
        log "building $image"
        "$RUNTIME" build -f "$ROOT/hack/Containerfile" -t "$image" "$ROOT"
    fi
    if [ "$DAEMONLESS" = true ]; then
        :
    elif [ "$RUNTIME" = podman ]; then
        log "loading $image into the cluster"
        "$RUNTIME" save -o "$workdir/image.tar" "$image"
        "$KIND" load image-archive "$workdir/image.tar" --name "$CLUSTER_NAME"
    else
        log "loading $image into the cluster"
        "$KIND" load docker-image "$image" --name "$CLUSTER_NAME"
    fi

    # The API server as the nodes reach it (no Service routing exists before ovnk runs).
    local server host port
    server="$("$KIND" get kubeconfig --internal --name "$CLUSTER_NAME" | sed -n 's/^ *server: https:\/\///p' | head -n 1)"
    host="${server%:*}"
    port="${server##*:}"
    chart_values "$host" "$port" "$repository" "$tag" > "$workdir/values.yaml"

    "$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f -
    if [ "$SSL" = true ]; then
        create_ssl_secrets "$workdir"
    fi
    log "installing charts/ovnk (plugins: ${PLUGINS[*]:-none})"
    "$HELM" upgrade --install ovnk "$ROOT/charts/ovnk" --namespace "$NAMESPACE" -f "$workdir/values.yaml"

    log "waiting for ovnk and the nodes (up to ${TIMEOUT}s)"
    "$KUBECTL" -n "$NAMESPACE" rollout status statefulset/ovnk-ovn-db --timeout="${TIMEOUT}s"
    "$KUBECTL" -n "$NAMESPACE" rollout status deployment/ovnk-controller --timeout="${TIMEOUT}s"
    "$KUBECTL" -n "$NAMESPACE" rollout status daemonset/ovnk-node --timeout="${TIMEOUT}s"
    "$KUBECTL" wait --for=condition=Ready nodes --all --timeout="${TIMEOUT}s"
    "$KUBECTL" -n kube-system rollout status deployment/coredns --timeout="${TIMEOUT}s"
    log "ready: kubectl --context kind-$CLUSTER_NAME get pods -A"
}

main "$@"
