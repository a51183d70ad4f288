"""The fast LSTM: cells/lstm.py's maths (the reference, proven equal in
tests/test_fast_lstm.py) rearranged for the CPU. It implements the same Cell
protocol, plus forward_ids/infer_ids for layer 0 and stack_inference.

Shape legend: T time steps, B batch (streams), H hidden size, G = 4H gate rows in
PyTorch's order [i | f | g | o]; n >= B the time loop's columns (layout.loop_width).

How the time loop is kept cheap (it runs T times per layer, everything else once):
  * inside the loop every array is feature-major, (rows, n): the step's GEMM is
    z^T = W_hh h^T with the weights on the left, which OpenBLAS vectorises along the
    streams, and each gate block is one contiguous slab. For stream counts that
    leave a remainder past its 16-wide vectors (25, 50), each step GEMM instead runs
    as h W_hh^T on weights packed once per window, through a transposed copy in and
    out (lstm_kernels.step_gemm_t; fast.stack runs that way throughout).
    The window's inputs and outputs keep the model's (T, B, .) layout: one
    transposed copy in and one out per window.
  * sigmoid(z) = 0.5*tanh(z/2) + 0.5, and the halving is folded into the i, f, o
    rows of W_hh, b_hh and xw once per window (exact: a power of two), so ONE tanh
    and one multiply-add with per-row constants give all four gates.
  * the loop writes only arrays allocated before it (large ones from fast.workspace)
    and calls in-place ufuncs, or, with numba, one fused kernel per step or one
    compiled call for the whole loop (fast.lstm_kernels), which never takes the GIL.
  * the backward loop does only what depends on the running gradient; the weight
    gradient is one GEMM over all T*B rows after the loop.
  * the loop's columns may be padded past B to OpenBLAS's column blocks (see
    layout.loop_width); the extra columns hold zeros and are never read back.
The switches (numba, fused loops, padding, stack inference) are fast.settings'.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import numpy as np

from ..cells.activations import times_x_T

# the same cell as the reference: its names, gate order and initial bias (re-exported)
from ..cells.lstm import GATE_NAMES as GATE_NAMES
from ..cells.lstm import GATES as GATES
from ..cells.lstm import STATE_NAMES as STATE_NAMES
from ..cells.lstm import TANH_GATES as TANH_GATES
from ..cells.lstm import init_bias as init_bias
from . import blas, settings, workspace
from .layout import gate_constants, loop_width

# The time loops' step GEMMs run block by block (lstm_kernels.step_gemm_t) only for
# stream counts that are not a multiple of this: at 16, 32 or 64 streams OpenBLAS's
# feature-major kernel wastes nothing, and the backward's was faster than the blocks
# (docs/performance.md, 2026-12-05).
BLOCKS_UNLESS_MULTIPLE = 16


class LSTMCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H) hidden states; h[0] is h0, h[t+1] the output at t
    c: np.ndarray  # (T+1, H, n) cell states, feature-major; c[0] is c0^T; n >= B columns
    gates: np.ndarray  # (T, 4H, n) post-activation gates [i | f | g | o], feature-major
    tanh_c: np.ndarray  # (T, H, n) tanh(c[t+1]), reused by the backward pass
    # (n = loop_width(B, W_hh): columns past B are zero padding, see loop_width)
    W_hh: np.ndarray  # (4H, H) recurrent weights


def _gates_(z, scale, offset) -> None:
    """z: (4H, B) pre-scaled pre-activations -> post-activation gates, in place."""
    np.tanh(z, out=z)
    z *= scale
    z += offset


def _cell_(gates, c_prev, c_out, tanh_out, h_out, ig) -> None:
    """c = f*c_prev + i*g; h = o*tanh(c), writing into the given (H, B) arrays."""
    H = c_prev.shape[0]
    np.multiply(gates[H : 2 * H], c_prev, out=c_out)  # f*c_prev
    np.multiply(gates[:H], gates[2 * H : 3 * H], out=ig)  # i*g
    c_out += ig
    np.tanh(c_out, out=tanh_out)
    np.multiply(gates[3 * H :], tanh_out, out=h_out)  # o*tanh(c)


def _numba(dtype) -> dict | None:
    """The numba kernels for dtype (lstm_kernels: forward_step, backward_step and,
    unless settings.fused_loops is off, the whole-loop kernels), or None for NumPy."""
    module = settings.compiled("lstm_kernels")
    if module is None or np.dtype(dtype) not in module.KERNELS:
        return None
    kernels = module.KERNELS[np.dtype(dtype)]
    if not settings.current().fused_loops:
        return {k: kernels[k] for k in ("forward_step", "backward_step", "transpose_into",
                                        "gather_gates", "transpose_steps", "prescale_steps")}
    return kernels


def fused_loops(dtype) -> bool:
    """True when the time loops run as whole compiled calls for dtype (numba on,
    settings.fused_loops on, NumPy's BLAS bound): what fast.stack builds on too."""
    kernels = _numba(dtype)
    return kernels is not None and "infer_loop" in kernels


def stack_inference(dtype) -> ModuleType | None:
    """The compiled step-major inference for LSTM stacks of this dtype (fast.stack:
    prepare, window_nll, generate), or None where it does not apply: what the engine
    and the sampler ask the cell for."""
    if not settings.current().stack_inference or not fused_loops(dtype):
        return None
    return settings.compiled("stack")


def cell_step(z, zh, c_prev, c_out, tanh_out, h_out, ig, scale, offset) -> None:
    """One forward step after the GEMM, feature-major: z (4H, B) pre-scaled input
    part, zh (4H, B) the recurrent part; z becomes the gates, and c, tanh(c), h
    (H, B) are written out. ig is (H, B) scratch; scale, offset are gate_constants()."""
    nb = _numba(z.dtype)
    if nb is not None:
        nb["forward_step"](z, zh, c_prev, c_out, tanh_out, h_out)
        return
    z += zh
    _gates_(z, scale, offset)
    _cell_(z, c_prev, c_out, tanh_out, h_out, ig)


def _prescaled(xw, W_hh, b_hh, width):
    """The feature-major gate buffer ((xw + b_hh) * scale)^T (T, 4H, width), zero in
    the padding columns, and the scaled weights W_hh * scale (4H, H), C-contiguous:
    the left operand of every step's GEMM. Also returns gate_constants()."""
    H = W_hh.shape[1]
    scale, offset = gate_constants(H, xw.dtype)
    T, B, G = xw.shape
    z = workspace.empty((T, G, width), xw.dtype)
    nb = _numba(xw.dtype)
    if nb is not None and b_hh.dtype == xw.dtype:  # the same numbers, compiled
        nb["prescale_steps"](xw, b_hh, scale[:, 0].copy(), z)
    else:
        np.add(xw.transpose(0, 2, 1), b_hh[:, None], out=z[:, :, :B])
        z[:, :, B:] = 0
        z *= scale
    return z, np.multiply(W_hh, scale, order="C"), scale, offset


def _gathered(ids, W_ih, b_ih, W_hh, b_hh, width):
    """_prescaled() for xw = one_hot(ids) W_ih^T + b_ih, gathered from the columns
    of W_ih straight into the (T, 4H, width) gate buffer: the same numbers, in the
    same order of operations ((W_ih[:, id] + b_ih) + b_hh) * scale. NumPy's gather
    (and its IndexError for an id out of range) where the numba kernel is not loaded
    or an id is out of range."""
    H = W_hh.shape[1]
    scale, offset = gate_constants(H, W_hh.dtype)
    nb = _numba(W_hh.dtype)
    T, B = ids.shape
    if (nb is None or W_ih.dtype != W_hh.dtype or not ids.size
            or ids.min() < 0 or ids.max() >= W_ih.shape[1]):
        return _prescaled(np.add(W_ih.T, b_ih, order="C")[ids], W_hh, b_hh, width)
    z = workspace.empty((T, W_hh.shape[0], width), W_hh.dtype)
    nb["gather_gates"](np.ascontiguousarray(W_ih), b_ih, b_hh, scale[:, 0].copy(),
                       np.ascontiguousarray(ids), z)
    return z, np.multiply(W_hh, scale, order="C"), scale, offset


def _rows(a: np.ndarray, B: int) -> np.ndarray:
    """a (T, X, width) -> a C-contiguous copy of its first B columns transposed,
    (T, B, X), in workspace memory: from the loop's (T, ., B) layout to the model's."""
    T, X, _ = a.shape
    out = workspace.empty((T, B, X), a.dtype)
    nb = _numba(a.dtype)
    if nb is not None:
        nb["transpose_steps"](a[:, :, :B], out)
    else:
        np.copyto(out, a[:, :, :B].transpose(0, 2, 1))
    return out


def _columns(a: np.ndarray, dtype=None) -> np.ndarray:
    """A C-contiguous COPY of a^T, (B, H) -> (H, B): the callers update it in place,
    and for B = 1 ascontiguousarray would hand back a view of the caller's array."""
    return np.array(a.T, dtype=dtype, order="C")


def _loop_input(a: np.ndarray, width: int, out=None) -> np.ndarray:
    """(T, B, X) -> C-contiguous (T, X, width): a transposed into the loop's layout,
    zero in the padding columns past B (see loop_width)."""
    T, B, X = a.shape
    if out is None:
        out = workspace.empty((T, X, width), a.dtype)
    nb = _numba(a.dtype)
    if nb is not None and out.dtype == a.dtype:
        nb["transpose_steps"](a, out[:, :, :B])
    else:
        np.copyto(out[:, :, :B], a.transpose(0, 2, 1))
    out[:, :, B:] = 0
    return out


def _loop_state(a: np.ndarray, width: int, dtype) -> np.ndarray:
    """(B, H) -> a C-contiguous (H, width) copy of a^T, zero past column B."""
    out = np.zeros((a.shape[1], width), dtype=dtype)
    out[:, : a.shape[0]] = a.T
    return out


def _stream_state(a: np.ndarray, B: int) -> np.ndarray:
    """(H, width) -> a C-contiguous (B, H) copy of the first B columns, transposed."""
    return np.array(a[:, :B].T, order="C")


def forward(xw, state0, W_hh, b_hh):
    """Run the LSTM recurrence over a window.

    Args:
        xw: (T, B, 4H) input projection x_t W_ih^T + b_ih for every step.
        state0: (h0, c0), each (B, H).
        W_hh: (4H, H) recurrent weights.  b_hh: (4H,) recurrent bias.
    Returns:
        hs: (T, B, H) hidden outputs, (hT, cT) each (B, H), and an LSTMCache.
    """
    B = xw.shape[1]
    return _forward(_prescaled(xw, W_hh, b_hh, loop_width(B, W_hh)), state0, W_hh, B)


def forward_ids(ids, W_ih, b_ih, state0, W_hh, b_hh):
    """forward() for one-hot input (layer 0), with the input projection done here:
    xw = W_ih[:, ids] + b_ih gathered straight into the loop's feature-major gate
    buffer, never made as a (T, B, 4H) array and transposed (about 4x faster).

    Args:
        ids: (T, B) int character ids.  W_ih: (4H, V).  b_ih: (4H,).
        state0, W_hh, b_hh: as forward().
    Returns:
        what forward() returns for xw = one_hot(ids) W_ih^T + b_ih.
    """
    B = ids.shape[1]
    return _forward(_gathered(ids, W_ih, b_ih, W_hh, b_hh, loop_width(B, W_hh)), state0,
                    W_hh, B)


def _forward(prescaled, state0, W_hh, B):
    """forward()'s time loop on the gate buffer from _prescaled or _gathered."""
    gates, W_s, scale, offset = prescaled
    T, G, n = gates.shape  # n = loop_width(B, W_hh) columns
    H, dtype = G // GATES, gates.dtype
    hT = workspace.empty((T + 1, H, n), dtype)  # h^T: the right operand of each GEMM
    c = workspace.empty((T + 1, H, n), dtype)
    tanh_c = workspace.empty((T, H, n), dtype)
    zh = np.zeros((G, n), dtype=dtype)  # W_hh h_{t-1}^T; step_gemm_t may leave its padding
    ig = np.empty((H, n), dtype=dtype)  # scratch for i*g
    hT[0] = _loop_state(state0[0], n, dtype)
    c[0] = _loop_state(state0[1], n, dtype)
    nb = _numba(dtype)
    if nb is not None and "forward_loop" in nb and B:
        nb["forward_loop"](W_s, gates, hT, c, tanh_c, zh,  # the loop below, without the GIL
                           _step_gemm(W_s, B, nb))
    else:
        for t in range(T):
            np.matmul(W_s, hT[t], out=zh)  # all four gates in one GEMM
            cell_step(gates[t], zh, c[t], c[t + 1], tanh_c[t], hT[t + 1], ig, scale, offset)
    h = _rows(hT, B)  # (T+1, B, H), the model's layout
    cache = LSTMCache(h=h, c=c, gates=gates, tanh_c=tanh_c, W_hh=W_hh)
    return h[1:], (h[T].copy(), _stream_state(c[T], B)), cache


def infer(xw, state0, W_hh, b_hh):
    """forward() without a cache, for evaluation and sampling.

    Same arguments as forward(); returns hs (T, B, H) and (hT, cT) each (B, H).
    Only hs and two (H, B) cell-state buffers are kept besides the gate buffer.
    """
    B = xw.shape[1]
    return _infer(_prescaled(xw, W_hh, b_hh, loop_width(B, W_hh)), state0, B)


def infer_ids(ids, W_ih, b_ih, state0, W_hh, b_hh):
    """infer() for one-hot input: forward_ids() without a cache."""
    B = ids.shape[1]
    return _infer(_gathered(ids, W_ih, b_ih, W_hh, b_hh, loop_width(B, W_hh)), state0, B)


def _infer(prescaled, state0, B):
    """infer()'s time loop on the gate buffer from _prescaled or _gathered."""
    gates, W_s, scale, offset = prescaled
    T, G, n = gates.shape
    H, dtype = G // GATES, gates.dtype
    hsT = workspace.empty((T, H, n), dtype)
    c = _loop_state(state0[1], n, dtype)  # updated step by step
    c_next = np.empty_like(c)
    tanh_c = np.empty_like(c)
    zh = np.zeros((G, n), dtype=dtype)  # zero: step_gemm_t may leave its padding
    ig = np.empty((H, n), dtype=dtype)
    h_prev = _loop_state(state0[0], n, dtype)
    nb = _numba(dtype)
    if nb is not None and "infer_loop" in nb and T and B:
        c = nb["infer_loop"](W_s, gates, hsT, h_prev, c, c_next, tanh_c, zh,
                             _step_gemm(W_s, B, nb))
        h_prev = hsT[T - 1]
    else:
        for t in range(T):
            np.matmul(W_s, h_prev, out=zh)
            cell_step(gates[t], zh, c, c_next, tanh_c, hsT[t], ig, scale, offset)
            c, c_next = c_next, c
            h_prev = hsT[t]
    return _rows(hsT, B), (_stream_state(h_prev, B), _stream_state(c, B))


def step(xw, state0, W_hh, b_hh, out) -> None:
    """One step with no window machinery (sampling): no (T, B, .) arrays, no cache,
    no weight copies; one GEMM (a GEMV for one stream) and one fused gate update.

    Args:
        xw: (B, 4H) input projection x W_ih^T + b_ih; overwritten. model.step hands
            it over as the transposed view of a C-contiguous (4H, B) array, which is
            then used in place (feature-major, as the time loop).
        state0: (h_prev, c_prev), each (B, H).  W_hh: (4H, H).  b_hh: (4H,).
        out: (h, c), each (B, H), written with the new state.
    """
    H = W_hh.shape[1]
    scale, offset = gate_constants(H, xw.dtype)
    z = xw.T if xw.T.flags.c_contiguous else _columns(xw)  # (4H, B)
    z += b_hh[:, None]
    z *= scale  # cell_step wants pre-scaled pre-activations
    zh = times_x_T(W_hh, state0[0])  # W_hh h_prev^T, (4H, B)
    zh *= scale
    c_new, tanh_c, h_new, ig = (np.empty((H, xw.shape[0]), dtype=xw.dtype) for _ in range(4))
    cell_step(z, zh, _columns(state0[1]), c_new, tanh_c, h_new, ig, scale, offset)
    out[0][...] = h_new.T
    out[1][...] = c_new.T


def keep_gate(cache: LSTMCache) -> np.ndarray:
    """The forget gate f (T, B, H) of the window: c = f*c_prev + i*g."""
    B, H = cache.h.shape[1:]
    return cache.gates[:, H : 2 * H, :B].transpose(0, 2, 1)


def activations(cache: LSTMCache) -> dict[str, np.ndarray]:
    """(T, B, H) views: h and c after each step, then the gates i, f, g, o."""
    B, H = cache.h.shape[1:]
    gates = {name: cache.gates[:, j * H:(j + 1) * H, :B].transpose(0, 2, 1)
             for j, name in enumerate(GATE_NAMES)}
    return {"h": cache.h[1:], "c": cache.c[1:, :, :B].transpose(0, 2, 1), **gates}


def _backward_factors(gates, c_prev, tanh_c, F, A) -> None:
    """The parts of dL/dz that do not depend on the running gradients, for a
    chunk of K steps at once, feature-major (shapes (K, 4H, B) and (K, H, B)):

        F = [g*i(1-i) ; c_prev*f(1-f) ; i(1-g^2) ; tanh(c)*o(1-o)]   (K, 4H, B)
        A = o*(1 - tanh(c)^2)                                          (K, H, B)

    so that one step of the backward loop is dz = [dc ; dc ; dc ; dh] * F and
    dc += dh*A. Sigmoid and tanh derivatives come from the cached outputs.
    """
    K, G, B = gates.shape
    H = G // GATES
    one = gates.dtype.type(1.0)
    g4 = gates.reshape(K, GATES, H, B)
    F4 = F.reshape(K, GATES, H, B)
    i, g, o = g4[:, 0], g4[:, 2], g4[:, 3]
    np.subtract(one, g4, out=F4)
    F4 *= g4  # s(1-s) in every block; the g block is replaced next
    np.multiply(g, g, out=F4[:, 2])
    np.subtract(one, F4[:, 2], out=F4[:, 2])  # 1-g^2
    F4[:, 0] *= g
    F4[:, 1] *= c_prev
    F4[:, 2] *= i
    F4[:, 3] *= tanh_c
    np.multiply(tanh_c, tanh_c, out=A)
    np.subtract(one, A, out=A)
    A *= o


def _chunk_steps(B, G, itemsize) -> int:
    """Steps per chunk of backward factors: about 256 KiB, so a chunk stays in cache."""
    return max(1, (1 << 18) // (B * G * itemsize))


def backward(dhs, dstateT, cache: LSTMCache):
    """Backpropagate through the window: the forward pass read upside down.

    Args:
        dhs: (T, B, H) dL/dh_t from the layer above (or the decoder).
        dstateT: (dhT, dcT), each (B, H): gradient flowing into the final state
            from the next window (zeros when the window is the last).
    Returns:
        dxw (T, B, 4H) = dL/dz, (dh0, dc0) each (B, H), dW_hh (4H, H), db_hh (4H,).
    """
    h, c, gates, tanh_c, W_hh = cache
    T, G, n = gates.shape  # n: the loop's columns, B or more (loop_width)
    B, H = h.shape[1], G // GATES
    dhsT = _loop_input(dhs.astype(gates.dtype, copy=False), n)  # (T, H, n)
    dz = workspace.empty((T, G, n), gates.dtype)  # dL/dz^T per step
    dh = _loop_state(dstateT[0], n, gates.dtype)  # running dL/dh_t^T
    dc = _loop_state(dstateT[1], n, gates.dtype)  # running dL/dc_t^T
    nb = _numba(gates.dtype)
    W_T = _transposed(W_hh, nb)  # (H, 4H): the left operand of each step's GEMM
    if nb is not None and "backward_loop" in nb and B:
        nb["backward_loop"](W_T, dz, gates, c, tanh_c, dh, dhsT, dc,  # the loop below
                            _step_gemm(W_T, B, nb))
    elif nb is not None:
        for t in reversed(range(T)):
            nb["backward_step"](dz[t], gates[t], c[t], tanh_c[t], dh, dhsT[t], dc)  # dc -> dc_{t-1}
            np.matmul(W_T, dz[t], out=dh)  # dL/dh_{t-1} (before adding dhs[t-1])
    else:
        _backward_loop_numpy(dhsT, c, gates, tanh_c, W_T, dz, dh, dc)
    dxw = _rows(dz, B)  # (T, B, 4H), the model's layout
    dz_flat = dxw.reshape(T * B, G)
    dW_hh = dz_flat.T @ h[:-1].reshape(T * B, H)  # one GEMM for all steps
    db_hh = dz_flat.sum(axis=0)
    return dxw, (_stream_state(dh, B), _stream_state(dc, B)), dW_hh, db_hh


def _step_gemm(W: np.ndarray, B: int, nb) -> tuple:
    """What the compiled loops' step_gemm_t reads besides W (N, K): W packed into blocks
    (lstm_kernels.pack_into) for B streams not a multiple of BLOCKS_UNLESS_MULTIPLE where
    the BLAS has the small kernel (float32), else an empty array (one GEMM on W, in
    pieces); and (B, K), (B, N) scratch."""
    N, K = W.shape
    packed = np.empty(0, dtype=W.dtype)
    blocks = B % BLOCKS_UNLESS_MULTIPLE != 0
    if blocks and W.dtype == np.float32 and blas.binding().SMALL_SGEMM_MNK.value:
        packed = np.empty(N * K, dtype=W.dtype)
        nb["pack_into"](W, packed)
    return packed, np.empty((B, K), dtype=W.dtype), np.empty((B, N), dtype=W.dtype)


def _transposed(W: np.ndarray, nb) -> np.ndarray:
    """A C-contiguous copy of W^T (transpose_into where the kernels are loaded)."""
    if nb is None or not W.flags.c_contiguous:
        return np.ascontiguousarray(W.T)
    out = np.empty(W.shape[::-1], dtype=W.dtype)
    nb["transpose_into"](W, out)
    return out


def _backward_loop_numpy(dhsT, c, gates, tanh_c, W_T, dz_all, dh, dc) -> None:
    """The backward time loop in NumPy ufuncs, feature-major: fills dz_all (T, 4H, B),
    updates dh, dc (H, B) in place. The factors F (see _backward_factors) are written
    into dz_all a chunk of steps at a time and then multiplied by the running
    gradients step by step."""
    T, G, B = gates.shape
    H = G // GATES
    dz4 = dz_all.reshape(T, GATES, H, B)  # a view: per-gate blocks
    K = _chunk_steps(B, G, gates.itemsize)
    A = np.empty((K, H, B), dtype=gates.dtype)
    tmp = np.empty((H, B), dtype=gates.dtype)
    for t1 in range(T, 0, -K):
        t0 = max(0, t1 - K)
        _backward_factors(gates[t0:t1], c[t0:t1], tanh_c[t0:t1], dz_all[t0:t1], A[: t1 - t0])
        for t in reversed(range(t0, t1)):
            dz = dz_all[t]
            dh += dhsT[t]
            # forward: h = o*tanh(c)  ->  do = dh * tanh(c)*o(1-o);  dc += dh * o(1-tanh(c)^2)
            dz[3 * H :] *= dh
            np.multiply(dh, A[t - t0], out=tmp)
            dc += tmp  # the cell gets gradient from h_t and from c_{t+1} (the carousel)
            # forward: c = f*c_prev + i*g  ->  [di ; df ; dg] = dc * [g ; c_prev ; i] * act'
            dz4[t, :3] *= dc
            dc *= gates[t, H : 2 * H]  # now dL/dc_{t-1}
            # forward: z = xw + W_hh h_prev^T + b_hh
            np.matmul(W_T, dz, out=dh)  # now dL/dh_{t-1}^T (before adding dhs[t-1])
