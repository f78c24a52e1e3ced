"""In-place BLAS level-3 updates on strided sub-blocks: C += A B and C_upper += Aᵀ A.

Why not scipy.linalg.blas: its f2py wrappers copy any output that is not contiguous, so
``dgemm(..., c=G[i:j, k:l], overwrite_c=True)`` updates a copy, not the Gram. A sub-block
of a Fortran-ordered matrix is exactly what BLAS takes (a pointer and a leading
dimension), so this module calls the same OpenBLAS routines through the function table
scipy exports for Cython (``scipy.linalg.cython_blas``), with ctypes. That costs no extra
pass over memory, runs at OpenBLAS's speed (bench/bench_spectrum.py measures the Gram
stage), and releases the GIL during the call.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg.cython_blas

from rnngen.errors import ParameterError

if TYPE_CHECKING:  # ctypes._CFuncPtr at run time; typeshed names it only here
    from _ctypes import CFuncPtr

_int, _double, _ptr = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double), ctypes.c_void_p
_char = ctypes.c_char_p
# Fortran signatures as scipy.linalg.cython_blas declares them (every argument by pointer).
_SIGNATURES = {
    "dgemm": (_char, _char, _int, _int, _int, _double, _ptr, _int, _ptr, _int, _double, _ptr, _int),
    "dsyrk": (_char, _char, _int, _int, _double, _ptr, _int, _double, _ptr, _int),
}


@cache
def _routine(name: str) -> CFuncPtr:
    capsule = scipy.linalg.cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    # CFUNCTYPE (not PYFUNCTYPE): ctypes releases the GIL for the duration of the call.
    return ctypes.CFUNCTYPE(None, *_SIGNATURES[name])(address)


def _layout(x: np.ndarray, what: str) -> tuple[int, int, bool]:
    """(address, leading dimension, transposed) of a float64 2-D array BLAS can read in
    place: column-major with unit row stride (not transposed), or row-major (transposed:
    the array is the transpose of a column-major one)."""
    if x.dtype != np.float64 or x.ndim != 2:
        raise ParameterError(f"{what} must be a 2-D float64 array; got {x.dtype}, {x.ndim}-D")
    rows, cols = x.shape
    s0, s1 = x.strides
    if s0 == 8 or rows == 1:  # columns contiguous
        ld = s1 // 8 if cols > 1 else max(rows, 1)
        if ld >= max(rows, 1) and (cols == 1 or s1 % 8 == 0):
            return x.ctypes.data, ld, False
    if s1 == 8 or cols == 1:  # rows contiguous
        ld = s0 // 8 if rows > 1 else max(cols, 1)
        if ld >= max(cols, 1) and (rows == 1 or s0 % 8 == 0):
            return x.ctypes.data, ld, True
    raise ParameterError(
        f"{what} has strides {x.strides}: neither its rows nor its columns "
        "are contiguous, so BLAS cannot use it in place"
    )


def _output(c: np.ndarray, what: str) -> tuple[int, int]:
    """(address, leading dimension) of an output block: column-major and writeable."""
    address, ld, transposed = _layout(c, what)
    if transposed or not c.flags.writeable:
        raise ParameterError(
            f"{what} must be a writeable column-major block (e.g. a block "
            f"of a Fortran-ordered array); got strides {c.strides}"
        )
    return address, ld


def gemm_update(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """C += A B in place. C must be column-major with unit row stride (e.g. any block
    ``G[i:j, k:l]`` of a Fortran-ordered G); A and B may be either layout."""
    m, n = c.shape
    k = a.shape[1]
    if a.shape != (m, k) or b.shape != (k, n):
        raise ParameterError(
            f"gemm_update: shapes C {c.shape}, A {a.shape}, B {b.shape} do not match C += A B"
        )
    if not (m and n and k):
        return
    pc, ldc = _output(c, "gemm_update: C")
    pa, lda, ta = _layout(a, "gemm_update: A")
    pb, ldb, tb = _layout(b, "gemm_update: B")
    one = ctypes.c_double(1.0)
    _routine("dgemm")(
        b"T" if ta else b"N",
        b"T" if tb else b"N",
        ctypes.c_int(m),
        ctypes.c_int(n),
        ctypes.c_int(k),
        one,
        pa,
        ctypes.c_int(lda),
        pb,
        ctypes.c_int(ldb),
        one,
        pc,
        ctypes.c_int(ldc),
    )


def syrk_update(c: np.ndarray, a: np.ndarray) -> None:
    """C_upper += Aᵀ A in place (C square, column-major; its strict lower triangle is not
    touched); A (k, n) in either layout."""
    n = c.shape[0]
    if c.shape != (n, n) or a.ndim != 2 or a.shape[1] != n:
        raise ParameterError(f"syrk_update: shapes C {c.shape}, A {a.shape} do not match C += Aᵀ A")
    k = a.shape[0]
    if not (n and k):
        return
    pc, ldc = _output(c, "syrk_update: C")
    pa, lda, ta = _layout(a, "syrk_update: A")
    one = ctypes.c_double(1.0)
    # Column-major A (k, n) is op 'T' (C += Aᵀ A); row-major A is a column-major (n, k)
    # Aᵀ, op 'N' (C += Aᵀ (Aᵀ)ᵀ).
    _routine("dsyrk")(
        b"U",
        b"N" if ta else b"T",
        ctypes.c_int(n),
        ctypes.c_int(k),
        one,
        pa,
        ctypes.c_int(lda),
        one,
        pc,
        ctypes.c_int(ldc),
    )
