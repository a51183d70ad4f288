"""A trained model as one object: weights, vocabulary and configs, loaded from a run.

Shape legend: T time, B batch, V vocab, H hidden, L layers, N characters of a text.

    >>> import charlstm
    >>> model = charlstm.load("runs/demo")          # a run directory or a .safetensors file
    >>> print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))

`generate` gives exactly the text `charlstm sample` prints for the same arguments (the
CLI adds a final newline when the text does not end with one): both draw through
`charlstm.sample.sample_text`. `generate_many` draws several samples side by side, as
`charlstm sample --num-samples N` does; `stop=` ends a text before a stop string
(sample.until_stop). `next_char_probs` and `surprisal` say what the model expects
character by character, through the forward `evaluate` uses. `LanguageModel` is a
`CharLSTM`, so `forward` and `loss_and_grads` work on it too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import eval_windows
from .evaluate import evaluate as evaluate_ids  # what eval and validation passes use
from .layers import LN2, log_softmax
from .model import zero_state
from .network import CharLSTM
from .runs import resolve_checkpoint
from .sample import (
    check_sampling_args,
    check_stop,
    encode_prime,
    numpy_step_fn,
    probabilities,
    random_seed,
    sample_text,
    sample_texts,
    stream_rng,
    until_stop,
)
from .text import Vocab, list_chars

# What `save` keeps of a training checkpoint's meta: where the model came from and how
# good it was. The rest (optimizer moments, data cursor, RNG states) only serves an exact
# resume, so a saved model is small and cannot be mistaken for a resumable run.
KEPT_META = ("train_config", "step", "epoch", "val_loss", "best_val_loss", "best_step",
             "elapsed_s", "data_sha256")


def training_config(meta: dict) -> TrainConfig | None:
    """The training config stored in a checkpoint's meta; None for one without
    (imported, or written by hand)."""
    try:
        return TrainConfig.from_dict(meta["train_config"])
    except (KeyError, TypeError, ValueError):
        return None


def check_count(name: str, value, low: int, optional: bool = False) -> None:
    """ValueError naming the argument unless value is an integer >= low (or None, if
    optional): the library refuses what the CLI's flags refuse, instead of returning
    something plausible (a prime for length -5) or failing deep inside NumPy."""
    if optional and value is None:
        return
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


class LanguageModel(CharLSTM):
    """A CharLSTM together with its vocabulary: text in, text out.

    Attributes:
        config: ModelConfig (cell, sizes, vocab_size = len(vocab)).
        vocab: charlstm.text.Vocab; id i is vocab.chars[i].
        params: name -> ndarray, PyTorch names and shapes (see charlstm.model.param_shapes).
        train_config: the TrainConfig it was trained with, or None if unknown.
        meta: the checkpoint's other metadata (step, val_loss, ...), a dict.
    """

    def __init__(self, config: ModelConfig, vocab: Vocab | Sequence[str], params: dict,
                 meta: dict | None = None):
        vocab = vocab if isinstance(vocab, Vocab) else Vocab(list(vocab))
        if len(vocab) != config.vocab_size:
            raise ValueError(f"the vocabulary has {len(vocab)} characters, the config says "
                             f"vocab_size {config.vocab_size}")
        super().__init__(config, dtype=params["decoder.weight"].dtype, params=params)
        self.vocab = vocab
        self.meta = dict(meta or {})
        self.train_config = training_config(self.meta)
        self.path: Path | None = None  # the file charlstm.load read it from, if any

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LanguageModel:
        return cls(ckpt.config, ckpt.vocab, ckpt.params, ckpt.meta)

    def checkpoint(self) -> Checkpoint:
        """The model as a weights-only Checkpoint (see KEPT_META)."""
        meta = {k: self.meta[k] for k in KEPT_META if k in self.meta}
        return Checkpoint(self.config, list(self.vocab.chars), self.params, meta=meta)

    def save(self, path) -> None:
        """Write the model to path (.safetensors) atomically: weights, vocabulary, configs
        and validation losses, without the optimizer state a resume would need. Every
        command that takes a checkpoint reads it, and so does `charlstm.load`."""
        save_checkpoint(path, self.checkpoint())

    def __repr__(self) -> str:
        c = self.config
        parts = [f"{c.cell.upper()} {c.num_layers}x{c.hidden_size}", f"vocab {len(self.vocab)}",
                 f"{self.num_params:,} parameters", str(self.dtype)]
        if isinstance(self.meta.get("step"), int):
            parts.append(f"step {self.meta['step']}")
        if isinstance(self.meta.get("val_loss"), float):
            parts.append(f"val_loss {self.meta['val_loss']:.4f}")
        if self.path is not None:
            parts.append(f"from {str(self.path)!r}")
        return f"LanguageModel({', '.join(parts)})"

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """(N,) int64 ids of text. A character not in the vocabulary is a ValueError
        that lists them all; unknown="skip" leaves them out (as the CLI's --unknown)."""
        if check_unknown(unknown) == "skip":
            return self.vocab.encode(text, skip_unknown=True)
        missing = self.vocab.unknown(text)
        if missing:
            raise ValueError(f"characters not in the model's vocabulary: {list_chars(missing)}"
                             "; pass unknown=\"skip\" to leave them out")
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        """The text of ids, any shape whose elements are ids in [0, V); read in C order."""
        return self.vocab.decode(np.asarray(ids).ravel())

    # ------------------------------------------------------------------ use

    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: str | Sequence[str] | None = None,
                 unknown: str = "error") -> str:
        """Sample text: the prime, then up to `length` characters drawn one at a time.

        The same arguments give the text `charlstm sample` prints (see the module
        docstring). prime "" starts as at the beginning of a line; temperature 0 is
        greedy; top_k / top_p restrict the draw to the most likely characters (None:
        off); seed None draws a fresh one. stop: a string or several; drawing ends as
        soon as the drawn text contains one, and the text returned ends just before it
        (the stop string is not included, as in LLM APIs; the prime is not searched).
        Characters of prime outside the vocabulary are a ValueError that lists them, or
        left out with unknown="skip".
        """
        return "".join(self.stream(prime, length, temperature, top_k, top_p, seed, stop,
                                   unknown))

    def stream(self, prime: str = "", length: int = 500, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, stop: str | Sequence[str] | None = None,
               unknown: str = "error") -> Iterator[str]:
        """`generate`, as an iterator: first the prime, then one character at a time.
        With stop, a character that may begin a stop string is held back until the
        next ones show that it does not."""
        check_count("length", length, 0)
        stops = check_stop(stop)
        prime_ids, echo, seed = self._prime(prime, seed, unknown)
        drawn = sample_text(numpy_step_fn(self.params, self.config),
                            zero_state(self.config, 1, self.dtype), self.vocab, prime_ids,
                            "", length, temperature, top_k, 1.0 if top_p is None else top_p,
                            stream_rng(seed, 0))
        return itertools.chain([echo] if echo else [], until_stop(drawn, stops))

    def generate_many(self, num_samples: int, prime: str = "", length: int = 500,
                      temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, seed: int | None = None,
                      stop: str | Sequence[str] | None = None,
                      unknown: str = "error") -> list[str]:
        """`num_samples` texts drawn side by side as one batch (very many split across
        charlstm.set_num_threads() workers, see charlstm.sample.generate_parallel).

        Text k is what `charlstm sample --num-samples N` prints as sample k+1 (less the
        final newline the CLI adds); text 0 is `generate`'s for the same arguments, up
        to the BLAS's rounding. The other arguments are `generate`'s; with stop, every
        text draws `length` characters and is then cut before its first stop string.
        """
        check_count("num_samples", num_samples, 1)
        check_count("length", length, 0)
        stops = check_stop(stop)
        prime_ids, echo, seed = self._prime(prime, seed, unknown)
        texts = sample_texts(self.params, self.config, self.vocab, prime_ids, "", length,
                             temperature, top_k, 1.0 if top_p is None else top_p, seed,
                             int(num_samples))
        return [echo + "".join(until_stop(iter(t), stops)) for t in texts]

    def _prime(self, prime: str, seed: int | None,
               unknown: str) -> tuple[np.ndarray, str, int]:
        """(prime ids, echo, seed) for a sample; seed None draws a fresh one."""
        self.encode(prime, unknown)  # a ValueError listing unknown characters, before any work
        seed = random_seed() if seed is None else seed
        prime_ids, echo = encode_prime(self.vocab, prime, skip_unknown=True, seed=seed)
        return prime_ids, echo, seed

    def next_char_probs(self, prefix: str = "", temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None,
                        unknown: str = "error") -> dict[str, float]:
        """The distribution of the character after prefix: {character: probability}
        over the whole vocabulary, in vocabulary order, summing to 1 (float64).

        The defaults give the model's own distribution; temperature, top_k and top_p
        give the one `generate(prefix, ...)` draws its first character from. prefix ""
        is the start of a line, as for generate (a vocabulary without a newline needs
        a prefix). unknown: as for encode.
        """
        check_sampling_args(temperature, top_k, 1.0 if top_p is None else top_p)
        ids = self.encode(prefix, unknown)
        if not ids.size:
            if "\n" not in self.vocab.index:
                raise ValueError("the vocabulary has no newline: give a prefix")
            ids = np.array([self.vocab.index["\n"]], dtype=np.int64)
        logits, _ = self.forward(ids[:, None])
        last = logits[-1].astype(np.float64)  # (1, V)
        p = (probabilities(last, temperature, top_k, 1.0 if top_p is None else top_p)
             if temperature > 0 else np.eye(len(self.vocab))[[int(last.argmax())]])
        return dict(zip(self.vocab.chars, (float(x) for x in p[0]), strict=True))

    def surprisal(self, text: str, seq_len: int | None = None,
                  unknown: str = "error") -> list[tuple[str, float]]:
        """(character, bits) for each character of text after the first: -log2 of the
        probability the model gave it after the characters before it.

        The text runs as one stream from a zero state through the forward `evaluate`
        uses, so the mean of the bits times ln 2 is `evaluate(text, batch_size=1)`.
        seq_len changes only the speed (default: the training run's). unknown: as
        for encode; a skipped character is neither scored nor context.
        """
        check_count("seq_len", seq_len, 1, optional=True)
        ids = self.encode(text, unknown)
        if len(ids) < 2:
            raise ValueError("the text needs at least 2 characters to score one prediction")
        T = seq_len or (self.train_config or TrainConfig()).seq_len
        nats, state = [], None
        for x, y, _ in eval_windows(ids, 1, T):
            logits, state = self.forward(x, state)
            logp = log_softmax(logits.astype(np.float64))
            nats.append(-np.take_along_axis(logp, y[..., None], axis=-1)[:, 0, 0])
        bits = np.concatenate(nats) / LN2
        return [(self.vocab.chars[i], float(b)) for i, b in zip(ids[1:], bits, strict=True)]

    def evaluate(self, text: str, batch_size: int | None = None,
                 seq_len: int | None = None, unknown: str = "error") -> float:
        """Mean next-character cross-entropy of the model on text, in nats/char.

        Every character after the first is predicted once (as `charlstm eval --split
        all`): the text is cut into batch_size contiguous streams run side by side, each
        starting from a zero state that is then carried through it, seq_len characters
        per forward call. seq_len changes only the speed; more streams are faster but
        each starts without context (batch_size=1 scores the text as one sequence).
        Both default to the training run's. Characters outside the vocabulary are a
        ValueError that lists them, or left out with unknown="skip" (as `--unknown skip`).
        """
        check_count("batch_size", batch_size, 1, optional=True)
        check_count("seq_len", seq_len, 1, optional=True)
        ids = self.encode(text, unknown)
        if len(ids) < 2:
            raise ValueError("the text needs at least 2 characters to score one prediction")
        trained = self.train_config or TrainConfig()
        return evaluate_ids(self.params, self.config, ids, batch_size or trained.batch_size,
                            seq_len or trained.seq_len)


def check_unknown(unknown: str) -> str:
    """unknown, if it is "error" or "skip" (the CLI's --unknown choices)."""
    if unknown not in ("error", "skip"):
        raise ValueError(f'unknown must be "error" or "skip", got {unknown!r}')
    return unknown


def load(path) -> LanguageModel:
    """The model in path: a run directory (its best.safetensors, else last.safetensors)
    or a checkpoint file. A missing, unreadable or invalid file (corrupt, not a
    checkpoint, metadata or weights out of range) is a charlstm.CheckpointError (a
    charlstm.errors.UserError) with a one-line message naming the file."""
    path = resolve_checkpoint(Path(path))
    model = LanguageModel.from_checkpoint(load_checkpoint(path))
    model.path = path
    return model
