"""Optional numba kernels for the LSTM's per-step element-wise maths.

Importing this module fails with ImportError when numba is not installed;
charlstm.cells.lstm then uses its plain NumPy loop, which computes the same
thing (tests/test_fastpath.py checks that the two agree).

Why: at B=64, H=512 one step of NumPy ufuncs makes ~10 passes over (B, 4H)
arrays and NumPy's float32 tanh is not vectorised on AVX2 (about 3 ns per
element), which costs as much as the step's GEMM. One fused loop per step
makes a single pass and, in float32, uses a vectorisable rational tanh.

Shape legend: B batch, H hidden; z, gates, dz are (B, 4H) in the order
[i | f | g | o]; everything else is (B, H).
"""

from __future__ import annotations

import math

import numba
import numpy as np

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


@numba.njit(inline="always", **_JIT)
def _tanh64(x):
    return math.tanh(x)


def _make_kernels(tanh):
    """The step kernels, specialised on a scalar tanh (one set per dtype)."""

    # Each row is processed in short 1-D loops that read and write one position
    # per iteration, so LLVM can prove they vectorise (one long loop mixing the
    # four gate blocks of one array defeats its alias analysis and runs scalar).

    @numba.njit(**_JIT)
    def forward_step(z, zh, c_prev, c_out, tanh_out, h_out):
        """z <- gates(z + zh) for PRE-SCALED z (i, f, o columns halved), then
        c = f*c_prev + i*g, tanh(c), h = o*tanh(c)."""
        B, H = c_prev.shape
        half = z.dtype.type(0.5)
        for b in range(B):
            zb, cp, co, tc, hb = z[b], c_prev[b], c_out[b], tanh_out[b], h_out[b]
            zhb = zh[b]
            for j in range(4 * H):
                zb[j] = tanh(zb[j] + zhb[j])
            for j in range(2 * H):  # i, f = sigmoid = 0.5*tanh(z/2) + 0.5
                zb[j] = zb[j] * half + half
            for j in range(3 * H, 4 * H):  # o
                zb[j] = zb[j] * half + half
            for j in range(H):  # c = f*c_prev + i*g
                co[j] = zb[H + j] * cp[j] + zb[j] * zb[2 * H + j]
            for j in range(H):
                tc[j] = tanh(co[j])
            for j in range(H):  # h = o*tanh(c)
                hb[j] = zb[3 * H + j] * tc[j]

    @numba.njit(**_JIT)
    def backward_step(dz, gates, c_prev, tanh_c, dh, dh_in, dc):
        """dz = dL/dz for one step, from dh = dL/dh_t (dh_in added first, from
        the layer above) and the running dc = dL/dc_t, which becomes dL/dc_{t-1}."""
        B, H = dc.shape
        one = dz.dtype.type(1.0)
        for b in range(B):
            gb, dzb, cp, tc = gates[b], dz[b], c_prev[b], tanh_c[b]
            dhb, dib, dcb = dh[b], dh_in[b], dc[b]
            for j in range(H):
                # forward: h = o*tanh(c)
                d_h = dhb[j] + dib[j]
                o = gb[3 * H + j]
                dzb[3 * H + j] = d_h * tc[j] * o * (one - o)
                dcb[j] += d_h * o * (one - tc[j] * tc[j])  # plus the carousel dc_t
            # forward: c = f*c_prev + i*g; sigmoid/tanh derivatives from the outputs
            for j in range(H):
                i = gb[j]
                dzb[j] = dcb[j] * gb[2 * H + j] * i * (one - i)
            for j in range(H):
                f = gb[H + j]
                dzb[H + j] = dcb[j] * cp[j] * f * (one - f)
            for j in range(H):
                g = gb[2 * H + j]
                dzb[2 * H + j] = dcb[j] * gb[j] * (one - g * g)
            for j in range(H):
                dcb[j] *= gb[H + j]  # now dL/dc_{t-1}

    return forward_step, backward_step


KERNELS = {np.dtype(np.float32): _make_kernels(_tanh32),
           np.dtype(np.float64): _make_kernels(_tanh64)}
