"""Reused memory for the large per-window arrays of the time loops.

Why: a window's gate buffers are tens of MB. glibc serves blocks above 32 MB straight
from the kernel and hands them back when they are freed, so every window paid again
for page faults and zeroed pages (docs/performance.md).

How: `empty(shape, dtype)` returns a view of a buffer this thread allocated before
and that nothing uses any more; otherwise it allocates a new one. A buffer is free
when no array refers to it: every view NumPy makes of one of our arrays (slices,
transposes, reshapes) keeps a reference to the buffer itself (`.base`), so the
buffer's reference count says whether anything still reads it. Nothing is ever
handed out twice while in use, whatever the caller keeps (a cache held for later, a
slice returned to the user). Each thread keeps its own buffers (workers never share
one), at most MAX_BUFFERS of them; `clear()` drops the calling thread's.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

MAX_BUFFERS = 24  # per thread: a few windows' worth of cache arrays
_local = threading.local()


def _buffers() -> list:
    if not hasattr(_local, "buffers"):
        _local.buffers = []
    return _local.buffers


def _free(buffers: list, k: int) -> bool:
    """True when nothing but the list refers to buffers[k]. (Indexing, not enumerate:
    enumerate keeps its last tuple alive, and the tuple refers to the buffer.)"""
    return sys.getrefcount(buffers[k]) == 2  # the list, and getrefcount's argument


def empty(shape, dtype) -> np.ndarray:
    """Like np.empty(shape, dtype), C-contiguous, from this thread's free buffers."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = _buffers()
    fits = [k for k in range(len(buffers))
            if nbytes <= buffers[k].nbytes <= 2 * nbytes + 4096 and _free(buffers, k)]
    if fits:
        buf = buffers[min(fits, key=lambda k: buffers[k].nbytes)]
    else:
        buf = np.empty(max(nbytes, 1), dtype=np.uint8)
        if len(buffers) >= MAX_BUFFERS:  # forget a free one, else keep no more
            free = [k for k in range(len(buffers)) if _free(buffers, k)]
            if free:
                del buffers[free[0]]
        if len(buffers) < MAX_BUFFERS:
            buffers.append(buf)
    return buf[:nbytes].view(dtype).reshape(shape)


def clear() -> None:
    """Drop the calling thread's buffers (memory comes back once no array uses them)."""
    _buffers().clear()
