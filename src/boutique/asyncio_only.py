"""Our server processes run on asyncio alone, so trio, which libraries import whenever it is installed, stays out."""

from __future__ import annotations

import sys


def keep_trio_out() -> None:
    """Mark trio absent in this process (call first thing, before anything imports httpx).

    httpcore imports trio at import time when it can, to serve trio event loops: ~200 ms and ~6 MiB in
    every process wherever trio is installed (the dev extras bring it, for Selenium). No process of ours
    runs a trio loop; marked absent, httpcore takes its path for trio not being installed. Only for a
    whole process of ours (a command), never a library user's: their process may well run trio.
    """
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
