"""A flag file watcher that sees every write: flagd's own misses one in the same clock tick as the last."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from openfeature.contrib.provider.flagd.resolvers.process.connector.file_watcher import FileWatcher


def _file_identity(path: str) -> tuple[int, int, int]:
    """What changes with every write of the file: inode (a rename brings a new one), mtime in ns, size."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class _EveryWriteWatcher(FileWatcher):
    """flagd's file watcher, but reloading on any new file identity rather than on a later mtime.

    flagd's own check (`mtime > last mtime`, the mtime taken after reading) misses a write that lands in
    the same clock tick as the last one, or during the read; a flag set just after start then never takes
    effect. The identity is taken before reading, so a write during the read is seen at the next poll.
    """

    _seen: tuple[int, int, int] | None = None

    def safe_load_data(self) -> None:
        """Reload when the file is not the one last read (errors are the parent's to report)."""
        with contextlib.suppress(OSError):  # a missing file is reported by the parent
            if _file_identity(self.file_path) == self._seen:
                return
        self.last_modified = 0.0  # the parent compares mtimes; the identity has already decided
        super().safe_load_data()

    def _load_data(self, modified_time: float | None = None) -> None:
        """Read the file, remembering the identity it had before the read."""
        identity = _file_identity(self.file_path)
        super()._load_data(modified_time)
        self._seen = identity

    def handle_error(self, error_message: str) -> None:
        """Report the error and read the file again at the next poll, changed or not."""
        self._seen = None
        super().handle_error(error_message)


def watch_every_write(provider: Any) -> None:
    """Swap the provider's file watcher for one that sees every write (see `_EveryWriteWatcher`)."""
    resolver: Any = getattr(provider, "resolver", None)
    watcher = getattr(resolver, "connector", None)
    if not isinstance(watcher, FileWatcher):
        raise RuntimeError("the flagd provider's file watcher has changed; the flag file watch cannot attach")
    resolver.connector = _EveryWriteWatcher(
        resolver.config, watcher.flag_store, watcher.emit_provider_ready, watcher.emit_provider_error
    )
