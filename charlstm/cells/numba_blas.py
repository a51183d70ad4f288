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

import contextlib
import ctypes
import functools
import hashlib
from pathlib import Path

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

ROW_MAJOR, NO_TRANS = 101, 111  # CBLAS enum values

# (symbol, integer type) in the order tried: NumPy's wheels ship OpenBLAS built for
# 64-bit integers with a scipy_ prefix; other builds export plain CBLAS names.
_CANDIDATES = {
    np.dtype(np.float32): (("scipy_cblas_sgemm64_", types.int64),
                           ("cblas_sgemm64_", types.int64), ("cblas_sgemm", types.int32)),
    np.dtype(np.float64): (("scipy_cblas_dgemm64_", types.int64),
                           ("cblas_dgemm64_", types.int64), ("cblas_dgemm", types.int32)),
}


@functools.cache
def _numpy_blas_info() -> dict | None:
    """threadpoolctl's record of the BLAS NumPy uses, or None when it cannot be told."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return lib
    return None


def _numpy_blas_library():
    """ctypes handle of the BLAS NumPy uses, or None when it cannot be told."""
    info = _numpy_blas_info()
    try:
        return None if info is None else ctypes.CDLL(info["filepath"])
    except OSError:
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


# The compiled kernels' sources: numba's disk cache of a function is keyed on the file
# that defines it alone, so a kernel compiled into another (matmul_into into the time
# loops, forward_step into stack_numba's) would stay stale in its callers' caches
# after an edit. When any of these files changes, every cached kernel goes.
_KERNEL_SOURCES = ("cells/lstm_numba.py", "cells/numba_blas.py", "numba_kernels.py",
                   "stack_numba.py")


def _drop_stale_kernel_caches() -> None:
    """Remove charlstm's numba cache files (in-tree __pycache__) when the kernel
    sources differ from those they were compiled from (a stamp file records them).
    Best effort: a read-only install keeps its cache (a new install rewrites every
    source file, which numba notices by itself)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _KERNEL_SOURCES:
        with contextlib.suppress(OSError):
            digest.update((root / name).read_bytes())
    stamp = root / "__pycache__" / "kernel-sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        for pattern in ("*.nbi", "*.nbc"):
            for path in root.rglob(f"__pycache__/{pattern}"):
                path.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:
        pass


_drop_stale_kernel_caches()
GEMM = {dtype: _external_gemm(dtype) for dtype in _CANDIDATES}
if any(g is None for g in GEMM.values()):
    GEMM = None

# OpenBLAS's AVX-512 cores (SkylakeX and its successors) run an sgemm whose
# M * N * K is at most 10^6 in a "small matrix" kernel that reads the operands where
# they lie, instead of packing them into blocks first (kernel/x86_64/
# sgemm_small_kernel_permit_skylakex.c). A time loop's step GEMM is past that
# size, and packing the weights every step is what keeps it below the core's peak;
# the compiled loops cut it into pieces of rows under the bound (see
# lstm_numba.matmul_into). Other cores have no such kernel (on Haswell the pieces
# measured 5-30% slower), so there the bound is 0: never cut. (Measured with numpy's
# OpenBLAS 0.3.31; an OpenBLAS built without SMALL_MATRIX_OPT would run the pieces
# packed, as on Haswell.)
# That kernel runs on one thread whatever the BLAS's setting, so the pieces are for
# callers on a one-thread BLAS only (the engine's workers): blas_threads() tells.
_SMALL_KERNEL_CORES = {"skylakex", "cooperlake", "sapphirerapids"}


def _external_threads():
    """OpenBLAS's openblas_get_num_threads() as a numba external function, or None."""
    lib = _numpy_blas_library()
    for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                   "openblas_get_num_threads"):
        try:
            address = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        except AttributeError:
            continue
        llvm.add_symbol("charlstm_blas_threads", address)
        return types.ExternalFunction("charlstm_blas_threads", types.int32())
    return None


blas_threads = _external_threads()
if blas_threads is None:  # not OpenBLAS: no small kernel to cut for (the bound is 0)
    @numba.njit(cache=True)
    def blas_threads():
        return 0


def _small_kernel_bound() -> int:
    """10^6 where NumPy's BLAS is OpenBLAS on a core with the small kernel, else 0."""
    info = _numpy_blas_info() or {}
    on_core = str(info.get("architecture", "")).lower() in _SMALL_KERNEL_CORES
    return 10**6 if on_core and info.get("internal_api") == "openblas" else 0


SMALL_SGEMM_MNK = ctypes.c_int64(_small_kernel_bound())
# Read at run time through a symbol, not frozen into the compiled code as a constant:
# numba's on-disk cache outlives the process, and the next one may run another core
# (OPENBLAS_CORETYPE). Tests set .value to try both ways.
llvm.add_symbol("charlstm_small_sgemm_mnk", ctypes.addressof(SMALL_SGEMM_MNK))


@intrinsic
def small_sgemm_mnk(typingctx):
    """SMALL_SGEMM_MNK's value now (int64), from compiled code."""
    def codegen(context, builder, signature, args):
        name = "charlstm_small_sgemm_mnk"  # declared once per LLVM module, linked by name
        variable = builder.module.globals.get(name)
        if variable is None:
            variable = ir.GlobalVariable(builder.module, ir.IntType(64), name)
            variable.linkage = "external"
        return builder.load(variable)
    return types.int64(), codegen
