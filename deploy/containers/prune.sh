#!/bin/sh
# Slim an installed venv ($1) for the image: remove what no Boutique process loads at run time (tests,
# C sources and headers, type stubs, bytecode caches, pip's scripts), then precompile only the modules
# the processes import when they start. Compiling everything would add ~40 MB; without any bytecode a
# read-only image recompiles on every start (about twice the start-up time).
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.c' -o -name '*.pxd' -o -name '*.pyx' \) -delete
find "$venv/bin" -type f ! -name boutique -delete  # console scripts of dependencies, activate, pip

"$venv/bin/python" -B - "$venv" <<'PY'
"""Import every entry point (services, observatory, registry) and compile what got imported."""
import importlib
import py_compile
import sys

from boutique.shop.services import SERVICES

venv = sys.argv[1]
entries = [spec.module for spec in SERVICES.values()]
entries += ["boutique.cli", "boutique.observatory.server", "boutique.mesh.registry.server"]
for name in entries:
    importlib.import_module(name)
# Unchecked hashes: the image's files never change, so Python need not compare timestamps with sources.
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
files = sorted({path for module in list(sys.modules.values())
                if (path := getattr(module, "__file__", None)) and path.startswith(venv) and path.endswith(".py")})
for path in files:
    py_compile.compile(path, doraise=True, invalidation_mode=mode)
print(f"precompiled {len(files)} modules")
PY
