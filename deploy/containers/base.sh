#!/usr/bin/env bash
# Build the local Debian base image (BASE_IMAGE, default localhost/debian-base:bookworm) with debootstrap,
# for machines that reach apt's mirror but no container registry. Does nothing when the image exists.
set -euo pipefail

image=${BASE_IMAGE:-localhost/debian-base:bookworm}
suite=${BASE_SUITE:-bookworm}

if podman image exists "$image"; then
  echo "base image $image exists"
  exit 0
fi
for program in podman debootstrap; do
  command -v "$program" >/dev/null || { echo "base.sh: $program is missing (apt-get install $program)" >&2; exit 1; }
done

# The machine's own apt mirror (deb822 or one-line format); the rootfs's sources list then names it too.
mirror=${BASE_MIRROR:-}
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /tmp/boutique-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1
}
rm -f "$rootfs.log"
# Downloaded packages and apt lists are not needed in the image (204 -> 121 MB); neither are manuals,
# documentation and translations (121 -> 76 MB). Like Debian's slim images, dpkg is told to skip those
# in packages installed later, keeping the copyright files.
rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
find "$rootfs/var/lib/apt/lists" -type f -delete
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/boutique-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/lintian" -mindepth 1 -delete 2>/dev/null || true
find "$rootfs/usr/share/locale" -mindepth 1 -not -name locale.alias -delete 2>/dev/null || true
tar -C "$rootfs" -c . | podman import --quiet - "$image" >/dev/null
echo "base image $image built"
