"""The fast wing's switches: one frozen Settings, read from the environment once.

CHARLSTM_BACKEND=numba (the default) uses every compiled kernel numba can give;
"numpy" keeps the fast LSTM's layout on NumPy ufuncs alone; "reference" runs the
cells as derived (charlstm/cells) and no kernel of this wing. Every switch lives
here so that a test flips one with `use(...)` instead of poking module globals.

Nothing here imports numba: compiled(name) imports a kernel module of this package
on first use, and only where the settings ask for numba.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True)
class Settings:
    fast_cells: bool = True  # the wing's cells (fast.lstm) in place of the reference ones
    numba: bool = True  # numba kernels where numba is installed, else NumPy ufuncs
    fused_loops: bool = True  # with numba: whole time loops compiled, calling BLAS
    pad_block: int | None = None  # loop columns padded to kernel blocks (layout.loop_width)
    fused_optimizer: bool = True  # with numba: optimiser passes over weight chunks
    stack_inference: bool = True  # with fused loops: compiled step-major eval and sampling


def from_environment(environ=os.environ) -> Settings:
    """The settings CHARLSTM_BACKEND asks for (numba, numpy or reference)."""
    backend = environ.get("CHARLSTM_BACKEND", "numba")
    if backend == "reference":
        return Settings(fast_cells=False, numba=False)
    return Settings(numba=backend != "numpy")


_current = from_environment()


def current() -> Settings:
    return _current


@contextlib.contextmanager
def use(**changes):
    """Context: the settings with `changes` (field=value) while it is open (tests)."""
    global _current
    before = _current
    _current = replace(_current, **changes)
    try:
        yield _current
    finally:
        _current = before


@functools.cache
def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:  # numba is not installed (or cannot bind what the module needs)
        return None


def available(name: str) -> bool:
    """Whether the numba kernel module fast.<name> imports here (whatever the settings)."""
    return _import(name) is not None


def compiled(name: str) -> ModuleType | None:
    """The numba kernel module fast.<name>, or None where numba is off or missing."""
    return _import(name) if _current.numba else None


def kernels_cold(kernel_file: Path, environ=os.environ) -> bool:
    """Whether numba has no cached compilation of kernel_file's kernels: it looks for
    numba's index files (*.nbi) where numba keeps them: under NUMBA_CACHE_DIR when that
    is set, else beside the source in __pycache__ or, where the package's folder is
    read-only, under ~/.cache/numba. A stale index (an edited source) reads as warm."""
    if environ.get("NUMBA_CACHE_DIR"):
        places = [Path(environ["NUMBA_CACHE_DIR"])]
    else:
        places = [kernel_file.parent / "__pycache__", Path.home() / ".cache" / "numba"]
    pattern = f"{kernel_file.stem}.*.nbi"
    return not any(next(iter(p.rglob(pattern)), None) for p in places if p.is_dir())


def compile_pending() -> bool:
    """Whether the first fast call will compile the LSTM's kernels (numba on and present,
    and no cached compilation of them): what the trainer says before its first step."""
    source = Path(__file__).with_name("lstm_kernels.py")
    return current().numba and available("lstm_kernels") and kernels_cold(source)
