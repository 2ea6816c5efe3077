"""emailMemoryLeak: the email service keeps copies of every confirmation it sends, times the flag's factor.

The copies live in anonymous memory maps, so the process's resident memory climbs by what is kept and
falls back at once when the flag goes off (freed heap memory often stays with the process). A cap keeps
the machine safe: past it nothing more is kept, and that is logged once.
"""

from __future__ import annotations

import logging
import mmap

from opentelemetry import trace

from boutique.mesh.flags import flags
from boutique.shop.flag_watch import FlagWatch

log = logging.getLogger(__name__)

EMAIL_MEMORY_LEAK = "emailMemoryLeak"
CAP_BYTES = 256 * 1024 * 1024
BLOCK_BYTES = 4 * 1024 * 1024


class Hoard:
    """Bytes written into anonymous memory blocks (every page touched, so resident), freed together."""

    def __init__(self, block_bytes: int = BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self.size = 0
        self._blocks: list[mmap.mmap] = []
        self._used = block_bytes  # of the last block: full, so the first write opens one

    def keep(self, data: bytes, times: int, limit: int) -> int:
        """Append `times` copies of `data`, never growing past `limit` bytes in all; the bytes kept."""
        kept = 0
        for _ in range(times):
            room = limit - self.size
            if room <= 0:
                break
            kept += self._append(memoryview(data)[:room])
        return kept

    def _append(self, view: memoryview) -> int:
        written = len(view)
        while view:
            if self._used == self.block_bytes:
                self._blocks.append(mmap.mmap(-1, self.block_bytes))
                self._used = 0
            step = min(len(view), self.block_bytes - self._used)
            self._blocks[-1][self._used : self._used + step] = view[:step]
            self._used += step
            self.size += step
            view = view[step:]
        return written

    def release(self) -> int:
        """Unmap every block; the bytes released."""
        released = self.size
        for block in self._blocks:
            block.close()
        self._blocks.clear()
        self._used = self.block_bytes
        self.size = 0
        return released


class ConfirmationLeak:
    """Keeps `factor` copies of each confirmation while emailMemoryLeak is on; lets go when it is off."""

    def __init__(self, cap_bytes: int = CAP_BYTES) -> None:
        self.cap_bytes = cap_bytes
        self.hoard = Hoard()
        self._capped = False
        self._watch = FlagWatch(EMAIL_MEMORY_LEAK, lambda: self.factor() > 0, self.release)

    @staticmethod
    def factor() -> int:
        """How many copies of each confirmation to keep (0: the flag is off)."""
        return max(0, int(flags().number(EMAIL_MEMORY_LEAK)))

    @property
    def size(self) -> int:
        """Bytes kept now."""
        return self.hoard.size

    def confirmation_sent(self, html: str) -> None:
        """Keep copies of a sent confirmation as the flag says (called inside the call's server span)."""
        factor = self.factor()
        if factor == 0:
            self.release()
            return
        self._watch.arm()
        self.hoard.keep(html.encode(), factor, self.cap_bytes)
        if self.size >= self.cap_bytes and not self._capped:
            self._capped = True
            log.warning(
                "%s: %d MB of confirmation copies kept, the cap; keeping no more",
                EMAIL_MEMORY_LEAK,
                self.size // 2**20,
            )
        span = trace.get_current_span()
        span.set_attribute("app.email.leak_factor", factor)
        span.set_attribute("app.email.leaked_bytes", self.size)

    def release(self) -> None:
        """Free every copy kept."""
        released = self.hoard.release()
        self._capped = False
        if released:
            log.info("%s is off: %d MB of confirmation copies released", EMAIL_MEMORY_LEAK, released // 2**20)
