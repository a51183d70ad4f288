"""In-place activations shared by the cells (no temporaries in the time loop)."""

from __future__ import annotations

import numpy as np


def sigmoid_(x: np.ndarray) -> None:
    """In-place logistic sigmoid via tanh: sigma(x) = 0.5 + 0.5 tanh(x/2), never overflows."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
