"""What each cell tracks: activations over a text and statistics about them.

Shape legend: N characters of text, L layers, H hidden units, V vocab, K top predictions.

Run a model over a text and record, for every layer and character, each of the
cell's signals after reading that character (LSTM: h, c and gates i, f, g, o;
GRU: h and gates r, z, n; RNN: h). Then, as in Karpathy, Johnson & Fei-Fei,
"Visualizing and Understanding Recurrent Networks" (2015):

  * correlate every unit with simple features of the text (inside quotes, line
    position, ...) to find interpretable cells;
  * measure gate saturation: how often each sigmoid gate is < 0.1 or > 0.9.

Everything here is a pure function of arrays; `charlstm visualize` shows the
same numbers on a page and in --json, for any cell: `cell_signals` reads a cell's
activations through the cell interface.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import cells, layers
from .config import ModelConfig
from .model import forward

SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9


class Signal(NamedTuple):
    name: str  # "h", "c", or a gate's letter ("i", "f", ...)
    kind: str  # "state" (unbounded or tanh), "gate" (sigmoid, in (0, 1)), "tanh" (in (-1, 1))
    values: np.ndarray  # (N, H) one layer's activation after reading each character


class Activations(NamedTuple):
    signals: list  # per layer: list of Signal, same names and order in every layer
    probs: np.ndarray  # (N, V) predicted distribution of the character after each one


def cell_signals(module: cells.Cell, cache) -> list[Signal]:
    """A layer's signals from its forward cache (one stream, B = 1), through the
    interface (charlstm.cells.Cell.activations) of the cell module that made it:
    states, then gates."""

    def kind(name):
        if name in module.STATE_NAMES:
            return "state"
        return "tanh" if name in module.TANH_GATES else "gate"

    return [Signal(name, kind(name), values[:, 0])
            for name, values in module.activations(cache).items()]


def record(params: dict, config: ModelConfig, ids: np.ndarray, window: int = 1000
           ) -> Activations:
    """Run the model over ids (N,) from a zero state, one stream, in windows of
    `window` characters with the state carried (same result as one pass, less memory)."""
    ids = np.asarray(ids)
    per_layer = [[] for _ in range(config.num_layers)]
    probs, state = [], None
    for start in range(0, len(ids), window):
        x = ids[start:start + window, None]
        logits, state, cache = forward(params, config, x, state, need_cache=True)
        probs.append(np.exp(layers.log_softmax(logits[:, 0])))
        for k, cell_cache in enumerate(cache.cell_caches):
            per_layer[k].append(cell_signals(cache.cell, cell_cache))
    signals = [[Signal(s.name, s.kind, np.concatenate([w[j].values for w in windows]))
                for j, s in enumerate(windows[0])] for windows in per_layer]
    return Activations(signals, np.concatenate(probs))


# --- text features -------------------------------------------------------------------

FEATURES = {
    "in_quotes": "inside a double-quoted span (quote marks included)",
    "in_brackets": "inside (), [] or {} (brackets included)",
    "line_position": "column: characters since the last newline",
    "line_start": "the first character of a line",
    "upper_run": "a letter in an upper-case word of 2+ letters (speaker names)",
    "whitespace": "a space, tab or newline",
}


def text_features(text: str) -> dict[str, np.ndarray]:
    """name -> (N,) float feature of each character of text (see FEATURES)."""
    n = len(text)
    out = {name: np.zeros(n) for name in FEATURES}
    in_quote, depth, column = False, 0, 0
    for t, ch in enumerate(text):
        if ch == '"':
            in_quote = not in_quote
        out["in_quotes"][t] = in_quote or ch == '"'  # the closing mark too
        depth += ch in "([{"
        out["in_brackets"][t] = depth > 0
        depth = max(depth - (ch in ")]}"), 0)
        out["line_position"][t] = column
        out["line_start"][t] = column == 0 and ch != "\n"
        column = 0 if ch == "\n" else column + 1
        out["whitespace"][t] = ch.isspace()
    for start, end in _runs(text, str.isupper):
        if end - start >= 2 and _word_is_upper(text, start, end):
            out["upper_run"][start:end] = 1
    return out


def _runs(text: str, pred):
    """(start, end) of every maximal run of characters satisfying pred."""
    start = None
    for t, ch in enumerate(text + "\0"):
        if pred(ch) and start is None:
            start = t
        elif not pred(ch) and start is not None:
            yield start, t
            start = None


def _word_is_upper(text: str, start: int, end: int) -> bool:
    """The run is a whole word: no lower-case letter touches it."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    return not before.islower() and not after.islower()


# --- statistics ----------------------------------------------------------------------

def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of acts (N, K) with feature (N,) -> (K,).
    A constant column or feature has no correlation: 0."""
    a = acts - acts.mean(axis=0)
    f = feature - feature.mean()
    denom = np.sqrt((a * a).sum(axis=0) * (f @ f))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f @ a) / denom
    return np.where(denom > 0, r, 0.0)


class Cell(NamedTuple):
    layer: int
    signal: str  # "h", "c", "i", ...
    unit: int
    r: float  # correlation with the feature


def rank_cells(signals: list, features: dict[str, np.ndarray], top: int = 10
               ) -> dict[str, list[Cell]]:
    """feature -> the `top` units (over every layer and signal) with the largest
    |correlation|, best first. signals: per layer, a list of Signal (N, H).
    A feature that is constant on the text (say, no quotes in it) ranks nothing: []."""
    where = [(k, s.name) for k, layer in enumerate(signals) for s in layer]
    acts = np.concatenate([s.values for layer in signals for s in layer], axis=1)
    H = signals[0][0].values.shape[1]
    ranked = {}
    for name, feature in features.items():
        if np.ptp(feature) == 0:
            ranked[name] = []
            continue
        r = correlations(acts.astype(np.float64), feature)
        best = np.argsort(-np.abs(r), kind="stable")[:top]
        ranked[name] = [Cell(*where[j // H], int(j % H), float(r[j])) for j in best]
    return ranked


def saturation(gate: np.ndarray, low: float = SATURATION_LOW, high: float = SATURATION_HIGH
               ) -> tuple[np.ndarray, np.ndarray]:
    """Fractions of time each unit of gate (N, H) is left-saturated (< low) and
    right-saturated (> high) -> two (H,) arrays."""
    return (gate < low).mean(axis=0), (gate > high).mean(axis=0)


def top_predictions(probs: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely next characters after each position: ids (N, k) and their
    probabilities (N, k), most likely first."""
    k = min(k, probs.shape[1])
    ids = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(probs, ids, axis=1)


def quantise(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column linear quantisation of x (N, H) to unsigned `bits`-bit codes.

    Returns codes (N, H) uint8/uint16, lo (H,), hi (H,): column j spans [lo_j, hi_j]
    in 2**bits - 1 equal steps, so dequantise() is within (hi - lo) / (2**(bits+1) - 2)
    of x, half a step.
    """
    levels = 2 ** bits - 1
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    codes = np.rint((x - lo) / span * levels)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16), lo, hi


def dequantise(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int = 8) -> np.ndarray:
    """Inverse of quantise: codes (N, H), lo (H,), hi (H,) -> (N, H) float64."""
    return lo + codes.astype(np.float64) * ((hi - lo) / (2 ** bits - 1))
