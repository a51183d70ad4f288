"""Files written whole or not at all, and only where charlstm may write. The ground
floor: imports nothing from the package but errors, so checkpoints, the run directory,
exports, downloads and plots can all use it."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import UserError

NAME_MAX = 255  # bytes of one file name on Linux, macOS and most file systems
# mkstemp's name is prefix + 8 random characters + suffix; ours adds "." + "." + ".tmp"
_TEMP_EXTRA = 1 + 1 + 8 + len(".tmp")


def refuse_non_regular(path: Path, advice: str = "give another output name") -> None:
    """One line (exit 2) if `path` exists and is not a regular file: charlstm replaces
    only files, never a device, a FIFO, a socket, a directory or a symbolic link (whose
    target a rename would leave, and a writer would follow). lstat, so a link is seen
    as itself, not as what it points at."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # an unreadable parent: the write itself reports it, naming the file
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise UserError(f"{path} is {kind}, not a regular file; charlstm writes only regular "
                    f"files it may replace: {advice}")


def is_device(path) -> bool:
    """Whether path is a character or block device (/dev/zero, a disk): an input never
    read, since it may never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # reading it reports what is wrong, naming the file
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def check_output(path: Path, force: bool) -> None:
    """An output file the user named: refused if it is not a regular file (even with
    --force), if it exists and force is not given, or if its directory is missing."""
    path = Path(path)
    refuse_non_regular(path)
    if os.path.lexists(path) and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: no such directory {path.parent}")


def temp_prefix(name: str) -> str:
    """The temporary file's prefix for `name`: ".NAME." when the whole temporary name
    fits in NAME_MAX bytes, else a hash of NAME, so a legal 255-byte name still works
    (and the run directory's stale-temp sweep, `.*.tmp`, still finds it)."""
    if len(name.encode("utf-8", "surrogateescape")) + _TEMP_EXTRA <= NAME_MAX:
        return f".{name}."
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f".{digest}."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`:
    a reader sees the old file or the new one, never half of either.

    A path that exists and is not a regular file is refused (refuse_non_regular),
    checked again just before the rename. A failure (a full disk, a read-only
    directory) is an OSError naming `path`, with the old file untouched and no
    temporary file left behind."""
    path = Path(path)
    refuse_non_regular(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp",
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        refuse_non_regular(path)  # made meanwhile (a FIFO, a link): still not ours
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # say which file, not which temporary name
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
