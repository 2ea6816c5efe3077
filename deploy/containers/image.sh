#!/usr/bin/env bash
# Build the Boutique image (IMAGE, default localhost/boutique:dev) from the Containerfile: the local
# Debian base first when BASE names it and it is missing, then the wheels on the host, then the image.
# BASE= (empty) builds on the Containerfile's default slim Python image instead (needs a registry).
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${IMAGE:-localhost/boutique:dev}
base=${BASE-localhost/debian-base:bookworm}
command -v podman >/dev/null || { echo "image.sh: podman is missing (see docs/containers.md)" >&2; exit 1; }

if [ "$base" = "${BASE_IMAGE:-localhost/debian-base:bookworm}" ]; then
  BASE_IMAGE=$base deploy/containers/base.sh
fi
deploy/containers/wheels.sh
# Buildah does not look into bind-mounted files when it reuses a cached layer: the wheels' digest, passed
# as a build argument, makes a changed wheel rebuild the install step.
digest=$(cd build/wheels && sha256sum -- * | sha256sum | cut -c1-16)
args=(--build-arg "WHEELS_DIGEST=$digest")
[ -n "$base" ] && args+=(--build-arg "BASE=$base")
previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
start=$(date +%s)
podman build --quiet --file Containerfile --tag "$image" "${args[@]}" . >/dev/null
# What this build replaced: the image the tag named before, and the build stages of other wheels (the
# current one stays as the cache of the next build).
current=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true  # still used by a container: it stays
fi
podman images --all --filter label=boutique.stage=build --format '{{.ID}} {{index .Labels "boutique.wheels"}}' \
  | while read -r id wheels; do
      [ "$wheels" = "$digest" ] || podman rmi "$id" >/dev/null 2>&1 || true
    done
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "built $image on ${base:-the default base} in $(( $(date +%s) - start )) s: $(( size / 1000000 )) MB"
