"""NumPy's BLAS: what it is (every OpenBLAS fact the wing relies on, read once) and
its GEMM bound for numba kernels, so compiled time loops call it without the GIL.

Shape legend: none (scalars and library handles only).

Nothing happens at import. The facts are read from threadpoolctl on first use; the
binding (binding()) imports numba, looks up the CBLAS symbols in the very library
NumPy loaded (same instance, same thread limits), registers them with LLVM under
fixed names and declares them to numba as external functions, so kernels that call
them can be cached on disk. Pointers pass as integers (one register on 64-bit ABIs).
Measurements behind these rules are in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import functools
from typing import NamedTuple

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values

# Column blocks of the OpenBLAS sgemm kernels the padding rule was measured on
# (OpenBLAS also runs its Haswell kernel on AMD Zen 1-3).
_KERNEL_BLOCKS = {"skylakex": 16, "haswell": 8}
# AVX-512 cores whose OpenBLAS runs sgemm of M*N*K <= 10^6 in a "small matrix" kernel
# that reads operands in place instead of packing them (sgemm_small_kernel_permit_skylakex.c).
_SMALL_KERNEL_CORES = {"skylakex", "cooperlake", "sapphirerapids"}

# (symbol, integer width in bits) in the order tried: NumPy's wheels ship OpenBLAS
# built for 64-bit integers with a scipy_ prefix; other builds export plain CBLAS names.
_GEMM_SYMBOLS = {
    np.dtype(np.float32): (("scipy_cblas_sgemm64_", 64), ("cblas_sgemm64_", 64),
                           ("cblas_sgemm", 32)),
    np.dtype(np.float64): (("scipy_cblas_dgemm64_", 64), ("cblas_dgemm64_", 64),
                           ("cblas_dgemm", 32)),
}
# OpenBLAS's out-of-place transposed copy (a BLAS extension, as in MKL): its SIMD kernels
# move a matrix 2.5-5x faster than a compiled loop of scalar copies in tiles.
_OMATCOPY_SYMBOLS = {
    np.dtype(np.float32): (("scipy_cblas_somatcopy64_", 64), ("cblas_somatcopy64_", 64),
                           ("cblas_somatcopy", 32)),
    np.dtype(np.float64): (("scipy_cblas_domatcopy64_", 64), ("cblas_domatcopy64_", 64),
                           ("cblas_domatcopy", 32)),
}
_THREADS_SYMBOLS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads")


@functools.cache
def numpy_blas_info() -> dict:
    """threadpoolctl's record of the BLAS NumPy uses ({} when it cannot be told)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return lib
    return {}


def _architecture() -> str:
    return str(numpy_blas_info().get("architecture", "")).lower()


@functools.cache
def kernel_block() -> int:
    """Column block of NumPy's sgemm kernel, 0 where the padding rule was not measured."""
    return _KERNEL_BLOCKS.get(_architecture(), 0)


@functools.cache
def small_kernel_bound() -> int:
    """10^6 where NumPy's BLAS is OpenBLAS on a core with the small kernel, else 0."""
    openblas = numpy_blas_info().get("internal_api") == "openblas"
    return 10**6 if openblas and _architecture() in _SMALL_KERNEL_CORES else 0


def _library():
    """ctypes handle of the BLAS NumPy uses, or None when it cannot be told."""
    path = numpy_blas_info().get("filepath")
    try:
        return None if path is None else ctypes.CDLL(path)
    except OSError:
        return None


def _address(lib, symbols):
    """(symbol, address) of the first of symbols lib exports, or (None, None)."""
    for symbol in symbols:
        try:
            return symbol, ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None, None


class Binding(NamedTuple):
    gemm: dict | None  # dtype -> numba external CBLAS gemm (order, transA, transB, M, N,
    #                    K, alpha, A, lda, B, ldb, beta, C, ldc); None: not bound
    omatcopy: dict | None  # dtype -> external CBLAS omatcopy (order, trans, rows, cols,
    #                        alpha, A, lda, B, ldb); None: not bound
    blas_threads: object  # external openblas_get_num_threads(), or None (not OpenBLAS)
    small_sgemm_mnk: object  # numba intrinsic: SMALL_SGEMM_MNK's value at run time
    SMALL_SGEMM_MNK: ctypes.c_int64  # the small-kernel bound; tests set .value


@functools.cache
def binding() -> Binding:
    """Bind NumPy's BLAS for numba (once, on the first compiled kernel's import).
    Raises ImportError without numba."""
    import llvmlite.binding as llvm
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    lib = _library()

    def bind(table: dict, signature) -> dict | None:
        """dtype -> numba external function for the first symbol of each dtype's
        candidates that lib exports; None unless every dtype has one."""
        bound = {}
        for dtype, candidates in table.items():
            symbol, address = _address(lib, [s for s, _ in candidates]) if lib else (None, None)
            if symbol is None:
                return None
            name = f"charlstm_{symbol}"
            llvm.add_symbol(name, address)
            integer = types.int64 if dict(candidates)[symbol] == 64 else types.int32
            bound[dtype] = types.ExternalFunction(name, signature(
                numba.from_dtype(dtype), integer, types.int32))
        return bound

    gemm = bind(_GEMM_SYMBOLS, lambda scalar, integer, enum: types.void(
        enum, enum, enum, integer, integer, integer, scalar, types.intp, integer,
        types.intp, integer, scalar, types.intp, integer))
    omatcopy = bind(_OMATCOPY_SYMBOLS, lambda scalar, integer, enum: types.void(
        enum, enum, integer, integer, scalar, types.intp, integer, types.intp, integer))
    threads = None
    symbol, address = _address(lib, _THREADS_SYMBOLS) if lib else (None, None)
    if symbol is not None:
        llvm.add_symbol("charlstm_blas_threads", address)
        threads = types.ExternalFunction("charlstm_blas_threads", types.int32())
    # read at run time through a symbol, not frozen into cached code as a constant: the
    # next process may run another core (OPENBLAS_CORETYPE)
    bound = ctypes.c_int64(small_kernel_bound())
    llvm.add_symbol("charlstm_small_sgemm_mnk", ctypes.addressof(bound))

    @intrinsic
    def small_sgemm_mnk(typingctx):
        def codegen(context, builder, signature, args):
            name = "charlstm_small_sgemm_mnk"  # declared once per LLVM module, linked by name
            variable = builder.module.globals.get(name)
            if variable is None:
                variable = ir.GlobalVariable(builder.module, ir.IntType(64), name)
                variable.linkage = "external"
            return builder.load(variable)
        return types.int64(), codegen

    return Binding(gemm, omatcopy, threads, small_sgemm_mnk, bound)
