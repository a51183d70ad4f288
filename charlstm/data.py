"""Corpus -> character ids -> train/val split -> truncated-BPTT windows.

Shape legend: N characters, T window length (--seq-len), B streams (--batch-size),
S characters per stream, W windows per epoch.

Batching, as char-rnn and torch-rnn do it: the training split is cut into B
contiguous streams of S = (N - 1) // B characters, one per batch row. Window w
of an epoch is columns [w*T, (w+1)*T) of every stream, and its targets are the
same columns shifted by one character. Window w+1 continues each stream exactly
where window w stopped, so the hidden state carried from one window to the next
is the true state of that stream. After the last full window the data wraps to a
new epoch and the state is reset to zeros. The position in this sequence is a
Cursor (epoch, window): two integers, saved in every checkpoint, so a resumed run
sees exactly the windows it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import UserError
from .text import Vocab, list_chars


class Corpus(NamedTuple):
    vocab: Vocab
    train: np.ndarray  # (N_train,) int64 ids: the first 1 - val_frac - test_frac of the text
    val: np.ndarray  # (N_val,) int64 ids: the next val_frac (empty when val_frac is 0)
    test: np.ndarray = np.empty(0, np.int64)  # the last test_frac, never trained on
    skipped: int = 0  # characters outside the vocabulary left out (skip_unknown)


def encode(text: str, vocab: Vocab) -> np.ndarray:
    """(N,) int64 ids of text, vectorised: a binary search of each code point in the
    vocabulary's code points sorted, mapped back to ids. The vocabulary may be in any
    order: an imported model's order is part of its weights."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)
    order = np.argsort(table, kind="stable")  # (V,) ids in code-point order
    pos = np.searchsorted(table[order], codes)
    if pos.size and (pos.max() >= len(table) or np.any(table[order[pos]] != codes)):
        raise ValueError("text holds characters outside the vocabulary")
    return order[pos].astype(np.int64)


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """First int(N * (1 - val_frac)) ids train, the rest validate: nanoGPT's
    shakespeare_char split (int(n * 0.9)), so validation losses compare."""
    train, val, _ = split3(ids, val_frac, 0.0)
    return train, val


def split3(ids: np.ndarray, val_frac: float,
           test_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test): the last int(N * test_frac) ids test, the int(N * (1 -
    val_frac - test_frac)) first train, validation between. With test_frac 0 this is
    split's cut, so adding a test split to a run moves only where validation ends."""
    n_train = int(len(ids) * (1.0 - val_frac - test_frac))
    n_val_end = len(ids) - int(len(ids) * test_frac)
    return ids[:n_train], ids[n_train:n_val_end], ids[n_val_end:]


def make_corpus(text: str, val_frac: float, source: str = "the text",
                vocab: Vocab | None = None, test_frac: float = 0.0,
                skip_unknown: bool = False) -> Corpus:
    """Vocabulary of the whole text (train, val and test), then the split.

    vocab: a model's vocabulary to encode with instead (fine-tuning, resuming); a
    character of text outside it is a UserError that lists them, or with skip_unknown
    is left out, after the cut (as `charlstm eval --unknown skip` leaves it out, so
    the splits' losses agree).
    """
    if vocab is None:
        vocab = Vocab.from_text(text)
    missing = vocab.unknown(text)
    skipped = 0
    if missing and not skip_unknown:
        raise UserError(f"{source} has characters the model's vocabulary lacks: "
                        f"{list_chars(missing)}; pass --unknown skip to leave them out, "
                        "--extend-vocab to give them rows of their own, or train a new "
                        "model on it")
    if missing:
        ids = np.fromiter((vocab.index.get(c, -1) for c in text), np.int64, len(text))
        skipped = int((ids < 0).sum())
        train, val, test = (part[part >= 0] for part in split3(ids, val_frac, test_frac))
    else:
        train, val, test = split3(encode(text, vocab), val_frac, test_frac)
    if test_frac > 0 and len(test) < 2:
        raise UserError(f"the test split of {source} has {len(test)} character(s); "
                        "it needs at least 2: raise --test-frac, or pass --test-frac 0")
    if val_frac > 0 and len(val) < 2:
        raise UserError(f"the validation split of {source} has {len(val)} character(s); "
                        "it needs at least 2: raise --val-frac, or pass --val-frac 0")
    return Corpus(vocab, train, val, test, skipped)


@dataclass(frozen=True)
class Cursor:
    """Where training is in the data: the next window to read."""

    epoch: int = 0  # completed passes over the training split
    window: int = 0  # next window of this epoch; 0 means the state is reset

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "window": self.window}

    @classmethod
    def from_dict(cls, d: dict) -> Cursor:
        return cls(epoch=int(d["epoch"]), window=int(d["window"]))


class Batches:
    """Truncated-BPTT windows of the training split (see the module docstring)."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 source: str = "the training split"):
        N, B, T = len(ids), batch_size, seq_len
        need = B * T + 1
        if need > N:
            raise UserError(
                f"{source} has {N:,} characters for training; one batch needs "
                f"--batch-size x --seq-len + 1 = {B} x {T} + 1 = {need:,}: lower "
                "--batch-size or --seq-len (or --val-frac), or use a longer text")
        self.batch_size, self.seq_len = B, T
        S = (N - 1) // B
        self.windows_per_epoch = S // T
        # (B, S + 1): row b is stream b, its last column the final target only
        self.streams = np.stack([ids[b * S: b * S + S + 1] for b in range(B)])

    def get(self, cursor: Cursor) -> tuple[np.ndarray, np.ndarray]:
        """Inputs x and targets y of the window at cursor, each (T, B) int64."""
        if not 0 <= cursor.window < self.windows_per_epoch:
            raise ValueError(f"cursor window {cursor.window} outside "
                             f"[0, {self.windows_per_epoch})")
        start = cursor.window * self.seq_len
        cols = self.streams[:, start: start + self.seq_len + 1]
        return np.ascontiguousarray(cols[:, :-1].T), np.ascontiguousarray(cols[:, 1:].T)

    def advance(self, cursor: Cursor) -> Cursor:
        """The cursor after one window: the next window, or window 0 of the next epoch."""
        if cursor.window + 1 < self.windows_per_epoch:
            return Cursor(cursor.epoch, cursor.window + 1)
        return Cursor(cursor.epoch + 1, 0)

    def epoch_progress(self, cursor: Cursor) -> float:
        """Completed epochs as a fraction (1.5 = halfway through the second)."""
        return cursor.epoch + cursor.window / self.windows_per_epoch


def eval_windows(ids: np.ndarray, batch_size: int, seq_len: int):
    """Cover every one of the N - 1 targets of ids exactly once, for evaluation.

    Like Batches, but the streams are ceil((N - 1) / B) long, the last window may
    be shorter than T, and padding at the end of the last stream is masked out.
    The caller carries the state from window to window.
    Yields:
        x, y: (t, B') int64 ids and targets; mask: (t, B') bool, True where y counts.
    """
    n_targets = len(ids) - 1
    if n_targets < 1:
        return
    B = min(batch_size, n_targets)
    S = -(-n_targets // B)
    padded = np.zeros(B * S + 1, dtype=np.int64)
    padded[: len(ids)] = ids
    valid = np.arange(B * S) < n_targets
    # stream b holds inputs b*S .. b*S+S-1 and their targets one further on
    x_all = padded[:-1].reshape(B, S)
    y_all = np.stack([padded[b * S + 1: b * S + S + 1] for b in range(B)])
    m_all = valid.reshape(B, S)
    for start in range(0, S, seq_len):
        cols = slice(start, min(start + seq_len, S))
        yield (np.ascontiguousarray(x_all[:, cols].T), np.ascontiguousarray(y_all[:, cols].T),
               np.ascontiguousarray(m_all[:, cols].T))
