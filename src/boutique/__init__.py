"""Boutique: a cloud-native microservices reference shop in Python."""

import sys

__version__ = "0.1.0"

# `import httpx` imports HTTPX's command-line client whenever click, rich and pygments are installed, as
# they are here (rich draws `boutique up`): ~150 ms and ~6 MiB in every process. None of ours runs that
# client, so it is marked absent, which HTTPX handles as a missing extra (`httpx.main` then says so).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
