"""Finite-difference gradient check of the whole model, in float64.

Every element of every parameter and of the initial state is perturbed by
+-e, +-2e and +-3e, and the sixth-order central difference
    f'(w) ~ (45[f(w+e) - f(w-e)] - 9[f(w+2e) - f(w-2e)] + [f(w+3e) - f(w-3e)]) / (60 e)
is compared with the analytic gradient from backward(). Its truncation error
is O(e^6), so e can be large (1e-2), which shrinks the float64 rounding noise of
the loss (~1e-16 * L / e) to ~1e-14: the numerical side is good to ~1e-13
absolute and any real mistake in the backward pass stands out.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import layers
from .cells import get_cell
from .config import ModelConfig
from .model import (
    drop_weights,
    forward,
    init_params,
    loss_and_grads,
    make_dropout_masks,
    zero_state,
)
from .penalties import Penalty

EPS = 1e-2
# Relative error is |a - n| / max(|a| + |n|, FLOOR). Entries with a true gradient
# near zero (ids that never occur, saturated gates) cannot be measured relatively
# in float64: the difference quotient carries ~1e-14 of rounding noise. The floor
# turns the test for those into |a - n| < tol * FLOOR, i.e. 1e-12 absolute at tol 1e-7.
FLOOR = 1e-5


class CheckRow(NamedTuple):
    name: str  # parameter name, or "state.h0" / "state.c0"
    shape: tuple
    max_rel_error: float
    max_abs_grad: float


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    denom = np.maximum(np.abs(analytic) + np.abs(numeric), FLOOR)
    return float((np.abs(analytic - numeric) / denom).max())


def numeric_gradient(f, array: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f() / d array by the 6th-order central difference, perturbing `array` in place."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for j in range(flat.size):
        orig = flat[j]
        diff = {}
        for k in (1, 2, 3):
            flat[j] = orig + k * eps
            up = f()
            flat[j] = orig - k * eps
            diff[k] = up - f()
        flat[j] = orig
        gflat[j] = (45.0 * diff[1] - 9.0 * diff[2] + diff[3]) / (60.0 * eps)
    return grad


def check_gradients(params, config: ModelConfig, x, y, state, masks=None,
                    penalty: Penalty | None = None, weight_masks=None) -> list[CheckRow]:
    """Compare analytic and numeric gradients for every parameter and initial state.

    Args:
        params: float64 params.  x, y: (T, B) ids.  state: tuple of (L, B, H) float64.
        masks: fixed output dropout masks (model.make_dropout_masks) or None.
        penalty: AR and TAR weights (penalties.Penalty): check loss + AR + TAR.
        weight_masks: fixed weight masks (model.make_weight_masks) or None; the
            numeric side perturbs the stored weights and masks them in every evaluation.
    """
    def loss() -> float:
        if penalty:  # the forward of AR and TAR needs the top layer's output: a whole pass
            wg = loss_and_grads(params, config, x, y, state, masks, penalty=penalty,
                                weight_masks=weight_masks)
            return wg.loss + wg.penalty
        logits, _, _ = forward(drop_weights(params, weight_masks), config, x, state, masks)
        return layers.softmax_cross_entropy(logits, y)[0]

    _, grads, _, dstate0, _ = loss_and_grads(params, config, x, y, state, masks,
                                             penalty=penalty, weight_masks=weight_masks)
    rows = []
    for name, value in params.items():
        num = numeric_gradient(loss, value)
        rows.append(CheckRow(name, value.shape, relative_error(grads[name], num),
                             float(np.abs(num).max())))
    for sname, s, ds in zip(get_cell(config.cell).STATE_NAMES, state, dstate0):
        num = numeric_gradient(loss, s)
        rows.append(CheckRow(f"state.{sname}0", s.shape, relative_error(ds, num),
                             float(np.abs(num).max())))
    return rows


def random_problem(config: ModelConfig, seq_len: int, batch_size: int, seed: int,
                   dropout_mask: bool = False):
    """A random float64 model, random ids, a random (non-zero) initial state and
    optionally fixed dropout masks: everything check_gradients needs."""
    rng = np.random.default_rng(seed)
    params = init_params(config, rng, np.float64)
    x = rng.integers(0, config.vocab_size, size=(seq_len, batch_size))
    y = rng.integers(0, config.vocab_size, size=(seq_len, batch_size))
    state = tuple(rng.normal(0, 0.5, s.shape) for s in zero_state(config, batch_size, np.float64))
    masks = None
    if dropout_mask:
        masks = make_dropout_masks(config, seq_len, batch_size, rng, np.float64)
    return params, x, y, state, masks


def format_table(rows: list[CheckRow], tolerance: float) -> str:
    width = max(len(r.name) for r in rows)
    header = f"{'parameter':<{width}}  {'shape':<12}  {'max rel error':>13}  {'max |grad|':>10}"
    lines = [header + "  ok"]
    for r in rows:
        ok = "yes" if r.max_rel_error < tolerance else "NO"
        lines.append(f"{r.name:<{width}}  {str(r.shape):<12}  {r.max_rel_error:>13.2e}  "
                     f"{r.max_abs_grad:>10.2e}  {ok}")
    return "\n".join(lines)
