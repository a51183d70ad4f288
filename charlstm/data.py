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
    # ids: int64 arrays from a text, or slices of a prepared corpus's read-only map
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
    _check_split(test, test_frac, "test", source)
    _check_split(val, val_frac, "validation", source)
    return Corpus(vocab, train, val, test, skipped)


def _check_split(part: np.ndarray, frac: float, name: str, source: str) -> None:
    """A held-out split asked for (frac > 0) must have 2 characters to score."""
    if frac > 0 and len(part) < 2:
        flag = "--test-frac" if name == "test" else "--val-frac"
        raise UserError(f"the {name} split of {source} has {len(part)} character(s); "
                        f"it needs at least 2: raise {flag}, or pass {flag} 0")


def split_corpus(vocab: Vocab, ids: np.ndarray, val_frac: float, source: str) -> Corpus:
    """The Corpus of ids (N,) split by val_frac; a validation split too short to score
    is a UserError."""
    train, val = split(ids, val_frac)
    _check_split(val, val_frac, "validation", source)
    return Corpus(vocab, train, val)


def eval_subset(val: np.ndarray, eval_chars: int) -> np.ndarray:
    """What validation during training scores: the first eval_chars ids of the
    validation split (0: all of them); a view, never a copy."""
    return val[:eval_chars] if eval_chars else val


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
        # Stream b is ids[b*S : b*S + S + 1], its last column the final target only. The
        # ids are read a window at a time, never copied whole: they may be a memory map
        # larger than memory (charlstm.prepare).
        self.ids = ids
        self.offsets = (np.arange(B) * S)[:, None] + np.arange(T + 1)  # (B, T + 1)

    def get(self, cursor: Cursor) -> tuple[np.ndarray, np.ndarray]:
        """Inputs x and targets y of the window at cursor, each (T, B) int64."""
        if not 0 <= cursor.window < self.windows_per_epoch:
            raise ValueError(f"cursor window {cursor.window} outside "
                             f"[0, {self.windows_per_epoch})")
        cols = np.take(self.ids, self.offsets + cursor.window * self.seq_len).astype(np.int64)
        return np.ascontiguousarray(cols[:, :-1].T), np.ascontiguousarray(cols[:, 1:].T)

    def advance(self, cursor: Cursor) -> Cursor:
        """The cursor after one window: the next window, or window 0 of the next epoch."""
        if cursor.window + 1 < self.windows_per_epoch:
            return Cursor(cursor.epoch, cursor.window + 1)
        return Cursor(cursor.epoch + 1, 0)

    def epoch_progress(self, cursor: Cursor) -> float:
        """Completed epochs as a fraction (1.5 = halfway through the second)."""
        return cursor.epoch + cursor.window / self.windows_per_epoch


def eval_windows(ids: np.ndarray, batch_size: int, seq_len: int,
                 streams: slice = slice(None)):
    """Cover every one of the N - 1 targets of ids exactly once, for evaluation.

    Like Batches, but the streams are ceil((N - 1) / B) long, the last window may
    be shorter than T, and padding at the end of the last stream is masked out.
    The caller carries the state from window to window. streams: only these of the
    B' = min(batch_size, N - 1) streams (a worker's share).
    Yields:
        x, y: (t, b) int64 ids and targets; mask: (t, b) bool, True where y counts;
        b the streams selected (B' by default).
    """
    n_targets = len(ids) - 1
    if n_targets < 1:
        return
    B = min(batch_size, n_targets)
    S = -(-n_targets // B)
    N = len(ids)
    rows = (np.arange(B)[streams] * S)[:, None]
    # stream b holds inputs b*S .. b*S+S-1 and their targets one further on; positions
    # past the text read as id 0 and are masked. A window at a time: ids may be a map.
    for start in range(0, S, seq_len):
        p = rows + np.arange(start, min(start + seq_len, S))  # (B, t) input positions
        x = np.where(p < N, np.take(ids, np.minimum(p, N - 1)), 0).astype(np.int64)
        y = np.where(p + 1 < N, np.take(ids, np.minimum(p + 1, N - 1)), 0).astype(np.int64)
        yield (np.ascontiguousarray(x.T), np.ascontiguousarray(y.T),
               np.ascontiguousarray((p < n_targets).T))
