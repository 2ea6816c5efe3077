#!/usr/bin/env bash
# Make podman work on a Debian bookworm host with hybrid cgroups and no systemd (idempotent, root):
# runc instead of crun, and container ulimits the host's hard limits allow. Sets these keys in
# /etc/containers/containers.conf (CONTAINERS_CONF_FILE to change the path), keeping everything else.
set -euo pipefail

conf=${CONTAINERS_CONF_FILE:-/etc/containers/containers.conf}
mkdir -p "$(dirname "$conf")"
touch "$conf"

/usr/bin/python3 - "$conf" <<'PY'
"""Set `key = value` under `[section]` in a TOML file, replacing an existing line or adding one."""
import re
import sys
from pathlib import Path

WANTED = {
    "containers": {"default_ulimits": '["nofile=1024:1024", "nproc=1024:1024"]'},
    "engine": {"runtime": '"runc"'},
    "network": {"network_backend": '"netavark"'},
}

path = Path(sys.argv[1])
lines = path.read_text().splitlines()
for section, keys in WANTED.items():
    for key, value in keys.items():
        wanted = f"{key} = {value}"
        header = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
        if header is None:
            lines += ["", f"[{section}]", wanted]
            continue
        end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")
                    and re.match(r"\s*\[[^\]\"=]+\]\s*$", lines[i])), len(lines))
        found = next((i for i in range(header + 1, end) if re.match(rf"\s*{key}\s*=", lines[i])), None)
        if found is None:
            lines.insert(header + 1, wanted)
            continue
        last = found  # a multi-line array runs until its brackets balance
        depth = lines[found].count("[") - lines[found].count("]")
        while depth > 0 and last + 1 < len(lines):
            last += 1
            depth += lines[last].count("[") - lines[last].count("]")
        lines[found : last + 1] = [wanted]
text = "\n".join(lines).lstrip("\n") + "\n"
if path.read_text() != text:
    path.write_text(text)
    print(f"configured {path}")
PY
