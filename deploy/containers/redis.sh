#!/usr/bin/env bash
# Build REDIS_IMAGE (default localhost/debian-redis:bookworm) on the local Debian base when it is missing:
# the redis-cart of the Kubernetes manifests, for `podman kube play` on a machine without a registry.
set -euo pipefail
cd "$(dirname "$0")"

image=${REDIS_IMAGE:-localhost/debian-redis:bookworm}
base=${BASE_IMAGE:-localhost/debian-base:bookworm}
if podman image exists "$image"; then
  echo "redis image $image exists"
  exit 0
fi
BASE_IMAGE=$base ./base.sh
context=$(mktemp -d /tmp/boutique-redis.XXXXXX)
trap 'rm -rf "$context"' EXIT
podman build --quiet --build-arg "BASE=$base" --file redis.Containerfile --tag "$image" "$context" >/dev/null
echo "redis image $image built"
