"""A fresh clone's first `boutique up` against a warm one, with PYTHONDONTWRITEBYTECODE set.

Clones the repository (its committed HEAD) into a temporary directory and installs it as `make up` does
before it starts the shop (`make bytecode`: the venv, the install, our package's bytecode). Then, all with
PYTHONDONTWRITEBYTECODE=1 as in containers and CI, where nothing a start compiles is kept: the clone's
first `up --no-load` until all SERVING; one `up` without the variable, which writes whatever bytecode the
install left out (the count is printed: 0 when it left nothing); and warm `up`s (the median of
--warm-runs). The ratio first/warm is the figure (target: at most 1.5).
Usage: python benchmarks/startup_fresh.py [--repo DIR] [--spawn WAY] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from startup import one_up

ROOT = Path(__file__).resolve().parent.parent


def bytecode_files(tree: Path) -> int:
    """How many .pyc files there are under `tree`."""
    return sum(1 for _ in tree.rglob("*.pyc"))


def main() -> None:
    """Clone, install, start three times and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone (default: this one)")
    parser.add_argument("--make-target", default="bytecode", help="what to make before the first up")
    parser.add_argument("--spawn", default=None, help="`boutique up --spawn` way (default: up's own)")
    parser.add_argument("--warm-runs", type=int, default=3, help="warm ups to take the median of")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="boutique-fresh-"))
    clone = work / "boutique"
    quiet = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    writing = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    try:
        subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
        began = time.perf_counter()
        subprocess.run(["make", "-s", "-C", str(clone), args.make_target], check=True, env=quiet)
        installed = time.perf_counter() - began
        python = str(clone / ".venv" / "bin" / "python")
        print(f"clone of {args.repo} installed by `make {args.make_target}` in {installed:.1f}s", flush=True)
        first = one_up(python, args.spawn, quiet, clone)
        print(f"first up (fresh clone): {first.seconds:.2f}s", flush=True)
        before = bytecode_files(clone)
        one_up(python, args.spawn, writing, clone)
        written = bytecode_files(clone) - before
        print(f"an up that may write bytecode wrote {written} .pyc files the install had not", flush=True)
        warm_runs = [one_up(python, args.spawn, quiet, clone).seconds for _ in range(args.warm_runs)]
        warm = statistics.median(warm_runs)
        print(f"warm up: {warm:.2f}s (median of {' '.join(f'{s:.2f}' for s in warm_runs)})", flush=True)
        print(f"ratio first/warm: {first.seconds / warm:.2f} (PYTHONDONTWRITEBYTECODE=1 in both)")
    finally:
        if args.keep:
            print(f"clone kept in {clone}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
