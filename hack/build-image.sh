#!/usr/bin/env bash
# Builds the ovnk image (the content of hack/Containerfile) without a container daemon:
# mmdebstrap makes the Debian rootfs, ovnk goes into /opt/ovnk/venv from wheels built here,
# and the rootfs becomes a one-layer OCI image bundle (lab/ovnk_lab/ovnk_image.py).
# Cached under $OVNK_CACHE/images by a hash of the sources: a second run only prints.
#
# Prints two lines: the bundle (an OCI image layout tarball) and the image name.
#   ctr -n k8s.io images import <bundle>         # a containerd node
#   kind load image-archive <bundle> --name NAME  # a kind cluster
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$ROOT/.venv/bin/python" -m ovnk_lab.ovnk_image "$@"
