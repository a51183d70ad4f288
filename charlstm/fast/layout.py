"""The fast LSTM's loop layout, shared by its time loops (fast.lstm) and the compiled
stack inference (fast.stack): per-row gate constants and padded column counts.

Shape legend: B batch (streams), H hidden, G = 4H gate rows.
"""

from __future__ import annotations

import numpy as np

from . import blas, settings

GATES = 4  # blocks of H rows in W_ih / W_hh: [i | f | g | o]


def gate_constants(H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (4H, 1) constants: scale (0.5 on sigmoid rows i, f, o; 1 on g) and
    offset (0.5 on sigmoid rows, 0 on g), so that for pre-scaled z (4H, B)
        act = tanh(z) * scale + offset
    is sigmoid on [i | f | o] and tanh on g."""
    scale = np.full((GATES * H, 1), 0.5, dtype=dtype)
    scale[2 * H : 3 * H] = 1.0
    offset = np.full((GATES * H, 1), 0.5, dtype=dtype)
    offset[2 * H : 3 * H] = 0.0
    return scale, offset


def _passes(n: int, block: int) -> int:
    """Sweeps an OpenBLAS sgemm kernel with `block`-wide column blocks makes over the
    weights for n columns: one per full block, then one per power of two the remainder
    needs (SkylakeX: 16, then 8, 4, 2, 1; Haswell: 8, then 4, 2, 1)."""
    return n // block + bin(n % block).count("1")


def loop_width(B: int, W_hh: np.ndarray) -> int:
    """Columns of the time loop's feature-major arrays for B streams: B, or more.

    Each step's GEMM streams the whole (4H, H) weight matrix past every column, and
    OpenBLAS's sgemm kernels sweep it once per block of columns and once more per
    power of two in the remainder; past a core's L2 (1 MiB of weights) the sweeps,
    not the flops, set the time, so e.g. 25 columns cost more than 32 on SkylakeX.
    The width is the smallest n >= B with the fewest sweeps (docs/performance.md has
    the measurements). The extra columns start at zero state with zero input, so the
    gates keep them at exactly h = c = 0; no result reads them. The block comes from
    settings.pad_block: None decides from NumPy's BLAS (float32 weights of 1 MiB or
    more only), 0 never pads, 8 or 16 force it (tests)."""
    block = settings.current().pad_block
    if block is None:
        block = (blas.kernel_block() if W_hh.dtype == np.float32 and W_hh.nbytes >= 2**20
                 else 0)
    if not block or B == 0:
        return B
    return min(range(B, -(-B // block) * block + 1), key=lambda n: _passes(n, block))
