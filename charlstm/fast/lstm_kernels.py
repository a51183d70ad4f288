"""numba kernels for the fast LSTM (fast.lstm): each step's element-wise maths as one
fused pass, and, where NumPy's BLAS is bound (fast.blas), whole time loops.

Shape legend: B batch (the loop's columns, padding included), H hidden, T time.
Everything is feature-major (see fast.lstm): z, gates, dz are (4H, B) with the gate
blocks [i ; f ; g ; o] one after another, everything else (H, B); the loops take
(T, 4H, B) and (T+1, H, B) stacks. All C-contiguous, so each gate block is one slab
of H*B numbers and the kernels run over slabs. The one batch-major piece is the GEMM
C = A W^T on weights packed in blocks of columns (pack_columns, matmul_t): the
stack inference's GEMM, and the time loops' step GEMM where the streams leave a
remainder past the feature-major kernel's vectors (step_gemm_t).

Why: one step of NumPy ufuncs makes ~10 passes over its arrays, and NumPy's float32
tanh is not vectorised on AVX2; one fused loop makes one pass with a vectorisable
rational tanh. Compiled loops run a worker's window from its first step to its last
without the GIL. Importing this module imports numba (ImportError without it).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from . import blas
from .blas import NO_TRANS, ROW_MAJOR, TRANS

# numba caches a kernel keyed on its own file only, so a kernel compiled into another
# would stay stale after an edit of its source. So every kernel that calls another
# lives in this file, except what fast.blas binds and fast.stack's loops: those files
# record the SHA-256 of the sources they compile in (a test keeps them current), so
# that editing a callee edits its callers and numba recompiles them.
BLAS_SOURCE_SHA256 = "00f2fdc4deb94a996576364957951006915b0400466692d8d4db82d24d794a5c"
_BOUND = blas.binding()
GEMM = _BOUND.gemm
OMATCOPY = _BOUND.omatcopy
small_sgemm_mnk = _BOUND.small_sgemm_mnk
if _BOUND.blas_threads is not None:
    blas_threads = _BOUND.blas_threads
else:  # not OpenBLAS: no small kernel to cut for (the bound is 0)
    @numba.njit(cache=True)
    def blas_threads():
        return 0

# Columns of W^T per block in pack_columns: a block of K rows by 32 columns is the
# widest that keeps a call of up to 61 streams (K = 512) under OpenBLAS's small-kernel
# bound, and the kernel runs 32 columns as two full 16-wide vectors.
PACK_COLUMNS = 32


def pack_columns(W: np.ndarray) -> np.ndarray:
    """W (..., N, K) as (..., N*K): W^T (K, N) cut into blocks of PACK_COLUMNS columns
    (the last one narrower when N is not a multiple), each block (K, w) C-contiguous,
    one after another: block j starts at K * PACK_COLUMNS * j. A GEMM on one block reads
    contiguous memory, where a block of columns of W^T itself would read rows N apart."""
    *lead, N, K = W.shape
    blocks = [np.swapaxes(W[..., j:j + PACK_COLUMNS, :], -1, -2).reshape(*lead, -1)
              for j in range(0, N, PACK_COLUMNS)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=-1))


# IEEE semantics (no fastmath: NaN must propagate so divergence is detected);
# error_model="numpy" drops the zero-division check that blocks vectorisation.
_JIT = dict(nogil=True, cache=True, error_model="numpy")

_CLAMP = np.float32(7.90531110763549805)  # |x| beyond this: tanh(x) rounds to +-1 in float32


@numba.njit(inline="always", **_JIT)
def _tanh32(x):
    """tanh for float32: a 13/6 odd/even rational approximation (Eigen's
    coefficients), max relative error ~4e-7 (a few ulp) over all inputs."""
    if x > _CLAMP:
        x = _CLAMP
    elif x < -_CLAMP:
        x = -_CLAMP
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


def _tanh(x):
    """tanh in the kernels: _tanh32 for float32, math.tanh for float64 (chosen
    when numba compiles a kernel for a dtype; see the overload below)."""
    return math.tanh(x)


@overload(_tanh, jit_options=_JIT)
def _tanh_overload(x):
    # (not numba's IR inlining, inline="always": it warns while compiling; LLVM
    # inlines these small functions into the loops all the same)
    if x == types.float32:
        def impl(x):
            return _tanh32(x)
    else:
        def impl(x):
            return math.tanh(x)
    return impl


@numba.njit(inline="always", **_JIT)
def _blocks(flat, n, s, e):
    """Positions s:e of each of the four gate slabs of a flat (4n,) array."""
    return flat[s:e], flat[n + s:n + e], flat[2 * n + s:2 * n + e], flat[3 * n + s:3 * n + e]


# Elements per pass: each loop below runs over CHUNK elements of a few slabs, so the
# handful of slabs a chunk touches stays in L1 between the loops.
CHUNK = 1024

# Each loop runs from 0 over views of one chunk and reads and writes few arrays at
# one position per iteration, so LLVM can check their overlap at run time and
# vectorise. (A loop over range(s, e) of the whole slab measured 12x slower,
# scalar; so did one loop touching many slabs: too many alias checks.)
# The kernels are module-level functions (not closures), so numba caches them on disk.


@numba.njit(**_JIT)
def forward_step(z, zh, c_prev, c_out, tanh_out, h_out):
    """z <- gates(z + zh) for PRE-SCALED z (i, f, o rows halved), then
    c = f*c_prev + i*g, tanh(c), h = o*tanh(c)."""
    n = c_prev.size
    zz, hh = z.reshape(-1), zh.reshape(-1)
    cp_all, co_all = c_prev.reshape(-1), c_out.reshape(-1)
    tc_all, h_all = tanh_out.reshape(-1), h_out.reshape(-1)
    half = z.dtype.type(0.5)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        zi, zf, zg, zo = _blocks(zz, n, s, e)
        hi, hf, hg, ho = _blocks(hh, n, s, e)
        cp, co, tc, hb = cp_all[s:e], co_all[s:e], tc_all[s:e], h_all[s:e]
        m = e - s
        for k in range(m):  # i, f, o = sigmoid = 0.5*tanh(z/2) + 0.5
            zi[k] = _tanh(zi[k] + hi[k]) * half + half
        for k in range(m):
            zf[k] = _tanh(zf[k] + hf[k]) * half + half
        for k in range(m):
            zg[k] = _tanh(zg[k] + hg[k])
        for k in range(m):
            zo[k] = _tanh(zo[k] + ho[k]) * half + half
        for k in range(m):  # c = f*c_prev + i*g
            co[k] = zf[k] * cp[k] + zi[k] * zg[k]
        for k in range(m):
            tc[k] = _tanh(co[k])
        for k in range(m):  # h = o*tanh(c)
            hb[k] = zo[k] * tc[k]


@numba.njit(**_JIT)
def backward_step(dz, gates, c_prev, tanh_c, dh, dh_in, dc):
    """dz = dL/dz for one step, from dh = dL/dh_t (dh_in added first, from
    the layer above; dh is left holding the sum) and the running dc = dL/dc_t,
    which becomes dL/dc_{t-1}."""
    n = dc.size
    gg, dd = gates.reshape(-1), dz.reshape(-1)
    cp_all, tc_all = c_prev.reshape(-1), tanh_c.reshape(-1)
    dh_all, di_all, dc_all = dh.reshape(-1), dh_in.reshape(-1), dc.reshape(-1)
    one = dz.dtype.type(1.0)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        gi, gf, gc, go = _blocks(gg, n, s, e)
        di, df, dgc, do = _blocks(dd, n, s, e)
        cp, tc, dhb, dib, dcb = cp_all[s:e], tc_all[s:e], dh_all[s:e], di_all[s:e], dc_all[s:e]
        m = e - s
        for k in range(m):
            dhb[k] += dib[k]
        # forward: h = o*tanh(c); sigmoid/tanh derivatives from the outputs
        for k in range(m):
            do[k] = dhb[k] * tc[k] * go[k] * (one - go[k])
        for k in range(m):  # plus the carousel dc_t
            dcb[k] += dhb[k] * go[k] * (one - tc[k] * tc[k])
        # forward: c = f*c_prev + i*g
        for k in range(m):
            di[k] = dcb[k] * gc[k] * gi[k] * (one - gi[k])
        for k in range(m):
            df[k] = dcb[k] * cp[k] * gf[k] * (one - gf[k])
        for k in range(m):
            dgc[k] = dcb[k] * gi[k] * (one - gc[k] * gc[k])
        for k in range(m):
            dcb[k] *= gf[k]  # now dL/dc_{t-1}


@numba.njit(**_JIT)
def tiled_transpose(a, out):
    """out (Y, X) = a (X, Y)^T in 16 x 16 tiles, so that both sides stay in cache (NumPy's
    strided copy of a large transpose runs row by row through the whole source, ~4x
    slower): transpose_into where the BLAS's transposed copy does not apply."""
    X, Y = a.shape
    for x0 in range(0, X, 16):
        x1 = min(x0 + 16, X)
        for y0 in range(0, Y, 16):
            for y in range(y0, min(y0 + 16, Y)):
                o = out[y]
                for x in range(x0, x1):
                    o[x] = a[x, y]


def blas_transpose(a, out):
    """out (Y, X) = a (X, Y)^T by the BLAS's omatcopy (fast.blas), where it is bound and
    the rows of both sides are unit-stride and apart; True if it ran (or there was
    nothing to copy), False (nothing written) otherwise. In compiled kernels only."""
    raise NotImplementedError("blas_transpose runs inside numba kernels only")


@overload(blas_transpose, jit_options=_JIT)
def blas_transpose_overload(a, out):
    if (OMATCOPY is None or a.dtype not in (types.float32, types.float64)
            or out.dtype != a.dtype):
        return lambda a, out: False
    omatcopy = OMATCOPY[np.dtype(str(a.dtype))]

    def impl(a, out):
        X, Y = a.shape
        size = a.itemsize
        if X == 0 or Y == 0:
            return True  # (OpenBLAS reports an empty matrix as an illegal argument)
        if (a.strides[1] != size or out.strides[1] != size
                or a.strides[0] % size != 0 or out.strides[0] % size != 0):
            return False
        lda, ldb = a.strides[0] // size, out.strides[0] // size
        if lda < Y or ldb < X:  # broadcast or overlapping rows: not a matrix for BLAS
            return False
        omatcopy(ROW_MAJOR, TRANS, X, Y, a.dtype.type(1.0), a.ctypes.data, lda,
                 out.ctypes.data, ldb)
        return True
    return impl


@numba.njit(**_JIT)
def transpose_into(a, out):
    """out (Y, X) = a (X, Y)^T: the BLAS's transposed copy (its SIMD kernels run
    2.5-5x faster than tiles of scalar copies, see docs/performance.md), else
    tiled_transpose. For the backward loop's W_hh^T and the layout copies below."""
    if not blas_transpose(a, out):
        tiled_transpose(a, out)


@numba.njit(**_JIT)
def transpose_steps(a, out):
    """out[t] = a[t]^T for every step: a (T, X, Y) -> out (T, Y, X), by transpose_into.
    Either side may be a strided view (the loop's first B of n columns): the copies
    between the model's (T, B, .) layout and the loop's (T, ., n), which NumPy's
    strided copy runs ~3x slower."""
    for t in range(a.shape[0]):
        transpose_into(a[t], out[t])


@numba.njit(**_JIT)
def prescale_steps(xw, b, scale, out):
    """fast.lstm._prescaled's gate buffer: out[t, g, j] = (xw[t, j, g] + b[g]) * scale[g]
    for j < B, and 0 in the padding columns j >= B. xw (T, B, G); b, scale (G,);
    out (T, G, n). Each step is transposed by transpose_into, then scaled in place
    while it is in cache."""
    T, B, G = xw.shape
    n = out.shape[2]
    for t in range(T):
        o = out[t]
        transpose_into(xw[t], o[:, :B])
        for g in range(G):
            bg, sg, row = b[g], scale[g], o[g]
            for j in range(B):
                row[j] = (row[j] + bg) * sg
            for j in range(B, n):
                row[j] = 0


@numba.njit(**_JIT)
def gather_gates(W_ih, b_ih, b_hh, scale, ids, out):
    """The LSTM's layer-0 gate buffer from ids, feature-major (fast.lstm._gathered):
    out[t, g, b] = ((W_ih[g, ids[t, b]] + b_ih[g]) + b_hh[g]) * scale[g] for b < B,
    0 in the padding columns b >= B. W_ih (G, V); b_ih, b_hh, scale (G,); ids (T, B);
    out (T, G, n). Each row of W_ih (V numbers) stays in cache while its B ids read it."""
    T, B = ids.shape
    G, n = out.shape[1], out.shape[2]
    for t in range(T):
        it, ot = ids[t], out[t]
        for g in range(G):
            w, bi, bh, s, o = W_ih[g], b_ih[g], b_hh[g], scale[g], ot[g]
            for b in range(B):
                o[b] = ((w[it[b]] + bi) + bh) * s
            for b in range(B, n):
                o[b] = 0


_STEPS = {"forward_step": forward_step, "backward_step": backward_step,
          "transpose_into": transpose_into, "gather_gates": gather_gates,
          "transpose_steps": transpose_steps, "prescale_steps": prescale_steps}
KERNELS = {np.dtype(np.float32): dict(_STEPS), np.dtype(np.float64): dict(_STEPS)}

if GEMM is not None:
    _SGEMM, _DGEMM = GEMM[np.dtype(np.float32)], GEMM[np.dtype(np.float64)]

    def matmul_into(A, B, C):
        """C = A @ B for C-contiguous A (M, K), B (K, N), C (M, N), by NumPy's BLAS."""
        np.matmul(A, B, out=C)

    @numba.njit(**_JIT)
    def piece_rows(M, N, K, itemsize):
        """Rows of A per GEMM call for C (M, N) = A (M, K) B (K, N): M (one call), or
        a multiple of 4 that keeps each call in OpenBLAS's small-matrix kernel
        (fast.blas.small_kernel_bound; float32 only, on a one-thread BLAS). That kernel
        runs 16, 32 or 64 columns of B (the streams) as one block, so each piece reads
        its rows of A once, 4 rows at a time. Other widths (24, 40, 48, 50, ...) run in
        pieces too, where a piece keeps at least 12 rows: thinner ones lose to one
        packed call (see docs/performance.md)."""
        limit = small_sgemm_mnk() if itemsize == 4 else 0
        if limit == 0 or limit >= M * N * K:
            return M
        if blas_threads() != 1:  # a threaded GEMM beats one-thread pieces
            return M
        rows = limit // (N * K) // 4 * 4
        fewest = 4 if N == 16 or N == 32 or N == 64 else 12
        return rows if rows >= fewest else M

    @overload(matmul_into, jit_options=_JIT)
    def matmul_into_overload(A, B, C):
        gemm = _SGEMM if A.dtype == types.float32 else _DGEMM

        def impl(A, B, C):
            M, K = A.shape
            N = B.shape[1]
            step = piece_rows(M, N, K, A.itemsize)
            for r in range(0, M, step):
                gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, min(step, M - r), N, K,
                     A.dtype.type(1.0), A.ctypes.data + r * K * A.itemsize, K,
                     B.ctypes.data, N, A.dtype.type(0.0),
                     C.ctypes.data + r * N * C.itemsize, N)
        return impl

    def matmul_t(A, W, W_packed, C):
        """C = A W^T for C-contiguous A (B, K), W (N, K), C (B, N): one GEMM on W, or
        block by block on W_packed = pack_columns(W) where rows_per_call allows
        (the stack inference's orientation: it vectorises along W's rows, 32 at a time,
        so any number of streams B runs at full speed)."""
        np.matmul(A, W.T, out=C)

    @numba.njit(**_JIT)
    def rows_per_call(B, K, itemsize):
        """Streams per GEMM call on packed weights, as even as the calls allow, under
        OpenBLAS's small-kernel bound for a block of PACK_COLUMNS columns (float32); 0
        where one call on the plain weights is the way (no small kernel, float64). The
        small kernel runs on one thread even where the BLAS has more: for the stack
        inference a threaded call was slower (docs/performance.md, 2026-12-05)."""
        limit = small_sgemm_mnk() if itemsize == 4 else 0
        if limit == 0:
            return 0
        rows = limit // (PACK_COLUMNS * K)
        if rows < 4:
            return 0
        calls = -(-B // rows)
        return -(-B // calls)

    @overload(matmul_t, jit_options=_JIT)
    def matmul_t_overload(A, W, W_packed, C):
        gemm = _SGEMM if A.dtype == types.float32 else _DGEMM

        def impl(A, W, W_packed, C):
            B, K = A.shape
            N = W.shape[0]
            size = A.itemsize
            one, zero = A.dtype.type(1.0), A.dtype.type(0.0)
            rows = rows_per_call(B, K, size) if W_packed.size else 0
            if rows == 0:  # one call: C = A W^T
                gemm(ROW_MAJOR, NO_TRANS, TRANS, B, N, K, one, A.ctypes.data, K,
                     W.ctypes.data, K, zero, C.ctypes.data, N)
                return
            for j in range(0, N, PACK_COLUMNS):  # C[:, j:j+w] = A W^T[:, j:j+w], a block
                w = min(PACK_COLUMNS, N - j)
                block = W_packed.ctypes.data + K * j * size
                for r in range(0, B, rows):
                    gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, min(rows, B - r), w, K, one,
                         A.ctypes.data + r * K * size, K, block, w, zero,
                         C.ctypes.data + (r * N + j) * size, N)
        return impl

    @numba.njit(**_JIT)
    def pack_into(W, out):
        """pack_columns(W) for one C-contiguous W (N, K), into out (N*K,), each
        block by the BLAS's transposed copy (the training loops pack every window)."""
        N, K = W.shape
        for j in range(0, N, PACK_COLUMNS):
            w = min(PACK_COLUMNS, N - j)
            transpose_into(W[j:j + w], out[K * j:K * (j + w)].reshape((K, w)))

    @numba.njit(**_JIT)
    def step_gemm_t(W, W_packed, xT, xb, yb, yT):
        """yT[:, :B] = W xT[:, :B] for the time loops' feature-major xT (K, n), yT (N, n)
        with B = len(xb) real columns: one step GEMM through the batch-major orientation
        (xb (B, K), yb (B, N) scratch: a transposed copy in, matmul_t on the packed W,
        a transposed copy out) where W_packed is given and the BLAS runs one thread;
        else matmul_into on all n columns. The padding columns of yT are then not
        written: they must hold zeros already."""
        B, K = xb.shape
        if W_packed.size and blas_threads() == 1 and rows_per_call(B, K, xb.itemsize):
            transpose_into(xT[:, :B], xb)
            matmul_t(xb, W, W_packed, yb)
            transpose_into(yb, yT[:, :B])
        else:
            matmul_into(W, xT, yT)

    @numba.njit(**_JIT)
    def forward_loop(W_s, gates, hT, c, tanh_c, zh, gemm):
        """fast.lstm.forward's time loop: every step's GEMM zh = W_s h_{t-1}^T, then
        forward_step; gates (T, 4H, n) pre-scaled in, post-activation out; hT, c
        (T+1, H, n) with step 0 filled; tanh_c (T, H, n); zh (4H, n) scratch, zero in
        its padding. gemm: (W_s packed or empty, hb (B, H), zb (B, 4H)) for step_gemm_t."""
        W_packed, hb, zb = gemm
        for t in range(gates.shape[0]):
            step_gemm_t(W_s, W_packed, hT[t], hb, zb, zh)
            forward_step(gates[t], zh, c[t], c[t + 1], tanh_c[t], hT[t + 1])

    @numba.njit(**_JIT)
    def infer_loop(W_s, gates, hsT, h0, c, c_next, tanh_c, zh, gemm):
        """fast.lstm.infer's time loop: as forward_loop, keeping only the outputs
        hsT (T, H, n); c and c_next (H, n) take turns. Returns the final c."""
        W_packed, hb, zb = gemm
        h_prev = h0
        for t in range(gates.shape[0]):
            step_gemm_t(W_s, W_packed, h_prev, hb, zb, zh)
            forward_step(gates[t], zh, c, c_next, tanh_c, hsT[t])
            c, c_next = c_next, c
            h_prev = hsT[t]
        return c

    @numba.njit(**_JIT)
    def backward_loop(W_T, dz, gates, c, tanh_c, dh, dhsT, dc, gemm):
        """fast.lstm.backward's time loop, last step first: backward_step, then the
        GEMM dh = W_hh^T dz_t^T. dz (T, 4H, n) out; dh, dc (H, n) carried in place.
        gemm: (W_T packed or empty, dzb (B, 4H), dhb (B, H)) for step_gemm_t."""
        W_packed, dzb, dhb = gemm
        for t in range(gates.shape[0] - 1, -1, -1):
            backward_step(dz[t], gates[t], c[t], tanh_c[t], dh, dhsT[t], dc)
            # forward: z = xw + W_hh h_prev^T + b_hh  ->  dh = W_hh^T dz
            step_gemm_t(W_T, W_packed, dz[t], dzb, dhb, dh)

    for _kernels in KERNELS.values():
        _kernels.update(forward_loop=forward_loop, infer_loop=infer_loop,
                        backward_loop=backward_loop, pack_into=pack_into)
