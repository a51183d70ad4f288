"""charlstm.fast.workspace: reused memory is never handed out while anything still uses it."""

from __future__ import annotations

import threading

import numpy as np

from charlstm.fast import workspace


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_released_buffer_is_reused_and_a_viewed_one_is_not():
    workspace.clear()
    a = workspace.empty((3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    where = _address(a)
    del a
    b = workspace.empty((5, 3), np.float32)  # same size: the same memory again
    assert _address(b) == where
    view = b.T[1:]  # a view keeps the buffer in use after b itself is gone
    del b
    c = workspace.empty((3, 5), np.float32)
    assert _address(c) != where
    c[...] = 1.0
    view[...] = 2.0  # the two never share memory
    assert (c == 1.0).all()
    other = _address(c)
    del view, c
    big = workspace.empty((2, 7), np.float64)  # 112 bytes: neither 60-byte buffer fits
    assert _address(big) not in {where, other}
    assert len(workspace._buffers()) == 3
    workspace.clear()


def test_each_thread_keeps_its_own_buffers():
    workspace.clear()
    kept = {}

    def take(name):
        a = workspace.empty((1000,), np.float64)
        kept[name] = [_address(b) for b in workspace._buffers()], _address(a)

    take("main")
    t = threading.Thread(target=take, args=("worker",))
    t.start()
    t.join()
    for name in ("main", "worker"):
        buffers, address = kept[name]
        assert buffers == [address]  # one buffer each: its own, none of the other's
    assert [_address(b) for b in workspace._buffers()] == kept["main"][0]
    workspace.clear()


def test_no_more_than_max_buffers_are_kept(monkeypatch):
    workspace.clear()
    monkeypatch.setattr(workspace, "MAX_BUFFERS", 3)
    held = [workspace.empty((10 * (k + 1),), np.float32) for k in range(5)]  # all in use
    assert len(workspace._buffers()) == 3
    assert all(a.shape == (10 * (k + 1),) for k, a in enumerate(held))
    del held
    workspace.empty((1000,), np.float32)  # none fits: a free one makes room
    assert len(workspace._buffers()) == 3
    workspace.clear()
