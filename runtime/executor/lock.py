"""One run at a time per run directory.

Stale-temp cleanup deletes every temp dir it finds, so a second concurrent `herd run`
on the same directory would destroy the first one's work in progress. An advisory
`flock` on `runs/<spec>/lock` prevents that; the kernel drops it when the holder dies
(kill -9 included), so a crashed run never leaves the directory locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from runtime.executor.errors import ExecutorError


class RunLocked(ExecutorError):
    """Another herd process is running in the same run directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLocked(
                f"another herd run (pid {holder}) is using {self.path.parent}; wait for it to finish\n"
                f"hint: `herd status SPEC` shows what it is doing"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
