"""One writer per run directory: an exclusive lock held while a run trains there.

`charlstm train --out RUN_DIR` and `--resume RUN_DIR` hold fcntl.flock on
RUN_DIR/.lock (which holds their PID) for as long as they write; a second one is
refused with the first one's PID. The kernel drops the lock when its holder exits,
however it exits (SIGKILL, a crash), so a lock is never stale: a .lock file left by
a killed run is simply taken over. A clean exit removes the file. Once the lock is
held, temporary files that a killed atomic write left behind (.NAME.XXXXXXXX.tmp)
cannot belong to anyone and are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import UserError

LOCK = ".lock"


@contextlib.contextmanager
def run_dir_lock(out: Path):
    """Create out if needed and hold its lock for the duration of the `with`."""
    out = Path(out)
    path = out / LOCK
    fd = _acquire(out, path)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # a full disk at start: name the lock file
            raise OSError(e.errno, e.strerror, str(path)) from None
        for stale in out.glob(".*.tmp"):
            if stale.is_file() and not stale.is_symlink():  # a file, as atomic writes make
                stale.unlink(missing_ok=True)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter then sees a new file
        os.close(fd)


def _acquire(out: Path, path: Path) -> int:
    """A descriptor of out/.lock, locked; retried if the file was replaced meanwhile
    (its holder removed it between our open and our lock)."""
    while True:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise UserError(f"cannot write in the run directory {out}: {e.strerror or e}; "
                            "training needs a writable directory (copy the run somewhere "
                            "writable and use that)", exit_code=1) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{out} is in use by another charlstm train (pid {holder}); "
                            "wait for it to finish or stop it, or choose another --out",
                            exit_code=1) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
