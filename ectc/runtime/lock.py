"""One `ectc run` per run folder at a time: an advisory lock (flock) on `<run>/.lock`.

The kernel drops the lock when its process dies, so a killed run never leaves a stale lock
behind; the file keeps the holder's pid and start time only to tell the user who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


class RunFolderBusy(Exception):
    pass


@contextlib.contextmanager
def run_folder_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderBusy(f"{folder} is in use by {holder}: wait for it to finish, or pass "
                                "another --run-id") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
