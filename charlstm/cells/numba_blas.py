"""NumPy's own BLAS GEMM, callable from numba kernels without the GIL.

Importing this module fails with ImportError when numba is not installed. GEMM is
None when NumPy's BLAS exposes no CBLAS GEMM this module knows how to call (then
the cells keep their time loops in Python, one BLAS call per step).

Why: a worker's time loop makes one GEMM and one fused kernel call per step. Run
from Python, every step pays the interpreter's call overhead and takes and drops the
GIL around each call; compiled with numba, calling the same BLAS through its C entry
point, the whole loop is one call that runs without the GIL from the first step to
the last. Measured, one LSTM layer's forward loop at 32 streams of 512, one thread:
34 ms compiled against 44 ms as a Python loop. (Two such workers in one process
still run a window 10-20% slower than one alone, 372-419 against 336-342 ms, while
two processes do not slow each other; that loss is not the GIL's, and its cause is
not pinned down.)

How: the CBLAS symbol is looked up in the BLAS library NumPy loaded (found with
threadpoolctl, so it is the same library instance and obeys the same thread
limits), registered with LLVM under a fixed name, and declared to numba as an
external function, so that the compiled kernels can be cached on disk. Pointers
are passed as integers (the same register on every 64-bit ABI).
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types

ROW_MAJOR, NO_TRANS = 101, 111  # CBLAS enum values

# (symbol, integer type) in the order tried: NumPy's wheels ship OpenBLAS built for
# 64-bit integers with a scipy_ prefix; other builds export plain CBLAS names.
_CANDIDATES = {
    np.dtype(np.float32): (("scipy_cblas_sgemm64_", types.int64),
                           ("cblas_sgemm64_", types.int64), ("cblas_sgemm", types.int32)),
    np.dtype(np.float64): (("scipy_cblas_dgemm64_", types.int64),
                           ("cblas_dgemm64_", types.int64), ("cblas_dgemm", types.int32)),
}


def _numpy_blas_library():
    """ctypes handle of the BLAS NumPy uses, or None when it cannot be told."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            try:
                return ctypes.CDLL(lib["filepath"])
            except OSError:
                return None
    return None


def _external_gemm(dtype):
    """A numba external function C = A @ B (row-major, no transposes) for dtype,
    or None. Its arguments are CBLAS's: order, transA, transB, M, N, K, alpha, A,
    lda, B, ldb, beta, C, ldc."""
    lib = _numpy_blas_library()
    if lib is None:
        return None
    scalar = numba.from_dtype(dtype)
    for symbol, integer in _CANDIDATES[np.dtype(dtype)]:
        try:
            address = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        except AttributeError:
            continue
        name = f"charlstm_{symbol}"
        llvm.add_symbol(name, address)
        enum = types.int32
        signature = types.void(enum, enum, enum, integer, integer, integer, scalar,
                               types.intp, integer, types.intp, integer, scalar,
                               types.intp, integer)
        return types.ExternalFunction(name, signature)
    return None


GEMM = {dtype: _external_gemm(dtype) for dtype in _CANDIDATES}
if any(g is None for g in GEMM.values()):
    GEMM = None
