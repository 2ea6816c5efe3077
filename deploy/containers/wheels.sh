#!/usr/bin/env bash
# Build the wheels the image installs offline: boutique and its runtime dependencies (no dev extras),
# with Debian's /usr/bin/python3 (the image's interpreter, so environment markers match), into
# WHEELS_DIR (default build/wheels). Builds from a clean copy of the sources, so no stale build files
# end up in the wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${WHEELS_PYTHON:-/usr/bin/python3}
out=${WHEELS_DIR:-build/wheels}
"$python" -m pip --version >/dev/null 2>&1 || {
  echo "wheels.sh: $python has no pip (apt-get install python3-pip)" >&2
  exit 1
}

work=$(mktemp -d /tmp/boutique-wheels.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/wheels"
# setup.py builds the compiled span walker; a built one in the tree (.so, generated .c) is not copied.
tar -c --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' --exclude='*.so' --exclude='_walker.c' \
  pyproject.toml README.md setup.py src | tar -C "$work/src" -x
# --find-links offers the last build's wheels again, so an unchanged dependency need not be downloaded.
find_links=()
[ -d "$out" ] && find_links=(--find-links "$out")
# A fixed timestamp makes the boutique wheel byte-identical when the sources are (so builds reuse layers).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" "${find_links[@]}" \
  "$work/src"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$work/wheels" "$out"
echo "$(ls "$out" | wc -l) wheels in $out ($(du -sh "$out" | cut -f1))"
