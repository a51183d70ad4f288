"""How far back does the gradient reach? dL/dh_t and dL/dc_t against distance in time.

Shape legend: T window length, B windows measured side by side, H hidden, V vocab.

A loss is placed on the LAST step of a window only. Walking the model's own
backward pass one step at a time (windows of length 1, the state gradient
carried from each into the one before, exactly as truncated BPTT chains
windows) yields dL/d(state) before every step, i.e. at every distance k = 1..T
from the loss. The norms of those gradients, for an LSTM, the same LSTM without
forget bias, a GRU and a vanilla tanh RNN of the same hidden size, at
initialisation and after a short training run, show the constant error
carousel at work (docs/gradflow.md).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import layers
from .cells import get_cell
from .config import ModelConfig
from .model import backward, forward, init_params, loss_and_grads
from .optim import clip_grad_norm, make_optimizer

REPORT_DISTANCES = (1, 10, 25, 50, 100, 200)


class Variant(NamedTuple):
    label: str  # legend name, e.g. "lstm fb=1"
    config: ModelConfig


class FlowRow(NamedTuple):
    variant: str
    phase: str  # "init" or "trained"
    state: str  # "h" or "c"
    distance: int  # steps between the state and the loss, 1..T
    norm: float  # geometric mean over the B windows of ||dL/dstate||_2
    keep_gate: float  # mean keep gate (LSTM f, GRU z) on the windows; nan for the RNN


def default_variants(vocab_size: int, hidden_size: int) -> list[Variant]:
    """LSTM with forget bias 1 and 0, GRU (update-gate bias 1), tanh RNN; one layer each."""
    def cfg(cell, fb):
        return ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=1,
                           forget_bias=fb, cell=cell)
    return [Variant("lstm fb=1", cfg("lstm", 1.0)), Variant("lstm fb=0", cfg("lstm", 0.0)),
            Variant("gru fb=1", cfg("gru", 1.0)), Variant("rnn", cfg("rnn", 0.0))]


def state_gradients(params: dict, config: ModelConfig, x: np.ndarray, y_last: np.ndarray):
    """dL/d(state entering step t) for a loss on the last step only.

    Args:
        x: (T, B) int ids.  y_last: (B,) the target of the last step.
    Returns:
        one (T, L, B, H) array per state name of the cell; entry t is the gradient
        with respect to the state before step t, which lies T - t steps from the loss.
        The loss is the SUM over the B windows of the last step's cross-entropy, so each
        window's gradient is its own, not scaled by 1/B.
    """
    T, B = x.shape
    state, caches = None, []
    for t in range(T):  # forward one step at a time, keeping every step's cache
        logits, state, cache = forward(params, config, x[t:t + 1], state)
        caches.append(cache)
    _, dlogits = layers.softmax_cross_entropy(logits, y_last[None, :])
    dlogits *= B  # mean -> sum over the windows
    zero = np.zeros_like(dlogits)
    out = [np.empty((T, *s.shape), dtype=s.dtype) for s in state]
    dstate = None
    for t in reversed(range(T)):  # backward one step at a time, carrying dL/dstate
        _, dstate = backward(dlogits if t == T - 1 else zero, dstate, caches[t])
        for arr, d in zip(out, dstate):
            arr[t] = d
    return out


def keep_gate(params: dict, config: ModelConfig, x: np.ndarray) -> float | None:
    """Mean over steps, windows and units of layer 0's keep gate along x.

    The keep gate is the factor the state is carried with: f for the LSTM (c = f*c_prev
    + ...), z for the GRU (h = z*h_prev + ...); the cell says which of its cached gates
    it is. None for the tanh RNN, which has no such gate.
    """
    _, _, cache = forward(params, config, x)  # from zero state, as state_gradients runs
    gate = cache.cell.keep_gate(cache.cell_caches[0])
    return None if gate is None else float(gate.mean(dtype=np.float64))


def flow_norms(params, config, x, y_last) -> dict[str, np.ndarray]:
    """State name -> (T,) norms, index k-1 for distance k, top layer, geometric mean over B."""
    grads = state_gradients(params, config, x, y_last)
    result = {}
    for name, g in zip(get_cell(config.cell).STATE_NAMES, grads):
        norms = np.linalg.norm(g[:, -1], axis=-1)  # (T, B), top layer
        # Geometric mean: the norms span decades, and a log-scale plot wants log averages.
        geo = np.exp(np.log(np.maximum(norms, 1e-300)).mean(axis=1))
        result[name] = geo[::-1].copy()  # reverse: index 0 is distance 1
    return result


def short_train(config: ModelConfig, ids: np.ndarray, steps: int, batch_size: int,
                seq_len: int, lr: float, seed: int) -> dict:
    """A few hundred Adam steps on random windows of `ids` (float32): a model past init."""
    rng = np.random.default_rng(seed)
    params = init_params(config, rng, np.float32)
    opt = make_optimizer("adam", params, lr=lr)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - seq_len - 1, size=batch_size)
        window = np.stack([ids[s:s + seq_len + 1] for s in starts], axis=1)  # (T+1, B)
        grads = loss_and_grads(params, config, window[:-1], window[1:]).grads
        clip_grad_norm(grads, 5.0)
        opt.step(params, grads)
    return params


def measure(ids: np.ndarray, variants: list[Variant], seq_len: int, windows: int,
            train_steps: int, train_batch: int, train_seq_len: int, lr: float, seed: int,
            progress=None) -> list[FlowRow]:
    """Gradient-flow norms for every variant, at init and after `train_steps` of training.

    Args:
        ids: (N,) int ids of the text; the measured windows come from its last 10%
            (held out from the short training run, which uses the first 90%).
        seq_len: T, the window behind the loss.  windows: B windows averaged over.
    """
    n_train = int(len(ids) * 0.9)
    train_ids, held_out = ids[:n_train], ids[n_train:]
    if len(held_out) < seq_len + 1 or n_train < train_seq_len + 2:
        raise ValueError(f"text too short: need at least {10 * (seq_len + 1)} characters "
                         f"for --seq-len {seq_len}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(held_out) - seq_len, size=windows)
    window = np.stack([held_out[s:s + seq_len + 1] for s in starts], axis=1)
    x, y_last = window[:-1], window[-1]
    rows = []
    for v in variants:
        t0 = time.perf_counter()
        phases = [("init", init_params(v.config, np.random.default_rng(seed), np.float64))]
        if train_steps > 0:
            trained = short_train(v.config, train_ids, train_steps, train_batch,
                                  train_seq_len, lr, seed)
            phases.append(("trained", {k: a.astype(np.float64) for k, a in trained.items()}))
        for phase, params in phases:
            keep = keep_gate(params, v.config, x)
            keep = float("nan") if keep is None else keep
            for state, norms in flow_norms(params, v.config, x, y_last).items():
                rows += [FlowRow(v.label, phase, state, k + 1, float(n), keep)
                         for k, n in enumerate(norms)]
        if progress:
            progress(f"{v.label}: {time.perf_counter() - t0:.1f}s")
    return rows


def write_csv(rows: list[FlowRow], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FlowRow._fields)
        for r in rows:
            w.writerow([r.variant, r.phase, r.state, r.distance, f"{r.norm:.6e}",
                        f"{r.keep_gate:.4f}"])


def _series(rows):
    """(variant, phase, state) -> (distances, norms, keep gate), in first-seen order."""
    series: dict = {}
    for r in rows:
        d, n, _ = series.setdefault((r.variant, r.phase, r.state), ([], [], r.keep_gate))
        d.append(r.distance)
        n.append(r.norm)
    return series


def decay_per_step(norms, k1: int = 10, k2: int = 100) -> float:
    """Geometric-mean factor by which the norm shrinks per step between distances k1 and k2."""
    T = len(norms)
    k1, k2 = (k1, min(k2, T)) if k1 + 1 < T else (1, T)
    if k2 <= k1:
        return float("nan")
    return float(np.exp((np.log(norms[k2 - 1]) - np.log(norms[k1 - 1])) / (k2 - k1)))


def plot_png(rows: list[FlowRow], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(rows)
    phases = list(dict.fromkeys(r.phase for r in rows))
    variants = list(dict.fromkeys(r.variant for r in rows))
    colors = dict(zip(variants, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.5), sharey=True,
                             squeeze=False)
    for ax, phase in zip(axes[0], phases):
        for (variant, ph, state), (d, n, _) in series.items():
            if ph == phase:
                ax.plot(d, n, color=colors[variant], linestyle="-" if state == "c" else "--",
                        label=f"{variant}: dL/d{state}")
        ax.set_yscale("log")
        ax.set_xlabel("steps back from the loss")
        ax.set_title(phase)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("‖dL/d state‖ (geometric mean over windows)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_table(rows: list[FlowRow], distances=REPORT_DISTANCES) -> str:
    """One line per (variant, phase, state): the norm at a few distances, the fitted
    decay per step, and the mean keep gate (the decay a pure carousel would give)."""
    series = _series(rows)
    T = max(r.distance for r in rows)
    cols = [k for k in distances if k <= T]
    width = max(len(f"{v} {p} d{s}") for v, p, s in series)
    lines = [f"{'gradient':<{width}}  " + "  ".join(f"{'k=' + str(k):>7}" for k in cols)
             + "  decay/step  keep gate"]
    for (v, p, s), (_, n, keep) in series.items():
        keep_text = "-" if np.isnan(keep) else f"{keep:.3f}"
        lines.append(f"{v + ' ' + p + ' d' + s:<{width}}  "
                     + "  ".join(f"{n[k - 1]:>7.1e}" for k in cols)
                     + f"  {decay_per_step(n):>10.3f}  {keep_text:>9}")
    return "\n".join(lines)
