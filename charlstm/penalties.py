"""Activation regularisation (AR) and temporal activation regularisation (TAR).

Shape legend: T time, B batch, H hidden.

From "Regularizing and Optimizing LSTM Language Models" (Merity, Keskar, Socher,
2017): two quadratic penalties on the top layer's output h (T, B, H), added to the
training objective (never to the reported cross-entropy):

    AR  = alpha * mean over (t, b, j) of h[t]^2                  small activations
    TAR = beta  * mean over (t, b, j) of (h[t] - h[t-1])^2       slowly changing ones

Both means are over N = count*H elements, count = T*B by default; a slice of a
batch's streams passes the whole batch's count (as softmax_cross_entropy does), so
the slices' penalties and gradients sum to the whole batch's.

h[-1] is the carried state's top-layer h (h0), the output of the step before the
window (zeros at the start of a sequence, the model's own initial h). So TAR has T
differences per stream in every window, a sequence cut into windows pays exactly the
penalty of the whole sequence, and the first difference's gradient flows into the
initial state. Both act on the layer's output before any dropout (see
docs/derivation.md for why).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Penalty(NamedTuple):
    ar: float = 0.0  # alpha: weight of mean(h^2)
    tar: float = 0.0  # beta: weight of mean((h[t] - h[t-1])^2)

    def __bool__(self) -> bool:  # a Penalty(0, 0) costs nothing: skip it
        return bool(self.ar or self.tar)


def activation_penalty(h: np.ndarray, h0: np.ndarray, penalty: Penalty,
                       count: int | None = None):
    """AR + TAR of one window, and its gradients.

    Args:
        h: (T, B, H) the top layer's output.  h0: (B, H) the top layer's h before
            the window (the carried state).
        count: the number of (t, b) positions the means are over (default T*B).
    Returns:
        value (float), dh (T, B, H), dh0 (B, H).
    """
    T, B, H = h.shape
    n = (T * B if count is None else count) * H
    # d[t] = h[t] - h[t-1], with h[-1] = h0
    d = np.empty_like(h)
    d[0] = h[0] - h0
    np.subtract(h[1:], h[:-1], out=d[1:])
    value = (penalty.ar * np.vdot(h, h) + penalty.tar * np.vdot(d, d)) / n
    # forward: AR = alpha/n sum h^2  ->  dAR/dh[t] = 2 alpha/n h[t]
    dh = h * h.dtype.type(2.0 * penalty.ar / n)
    # forward: TAR = beta/n sum_t d[t]^2, d[t] = h[t] - h[t-1]: h[t] enters d[t] with +1
    # and d[t+1] with -1, so dTAR/dh[t] = 2 beta/n (d[t] - d[t+1]), d[T] = 0
    d *= h.dtype.type(2.0 * penalty.tar / n)
    dh += d
    dh[:-1] -= d[1:]
    return float(value), dh, -d[0]
