"""A trained model as one object: weights, vocabulary and configs, loaded from a run.

Shape legend: T time, B batch, V vocab, H hidden, L layers, N characters of a text.

    >>> import charlstm
    >>> model = charlstm.load("runs/demo")          # a run directory or a .safetensors file
    >>> print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))

`generate` gives exactly the text `charlstm sample` prints for the same arguments (the
CLI adds a final newline when the text does not end with one): both draw through
`charlstm.sample.sample_text`. `generate_many` draws several samples side by side, as
`charlstm sample --num-samples N` does. `LanguageModel` is a
`CharLSTM`, so `forward` and `loss_and_grads` work on it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .evaluate import evaluate as evaluate_ids  # what eval and validation passes use
from .model import zero_state
from .network import CharLSTM
from .runs import resolve_checkpoint
from .sample import (
    encode_prime,
    numpy_step_fn,
    random_seed,
    sample_text,
    sample_texts,
    stream_rng,
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

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str) -> np.ndarray:
        """(N,) int64 ids of text; a character not in the vocabulary is a ValueError
        that lists them all."""
        missing = self.vocab.unknown(text)
        if missing:
            raise ValueError(f"characters not in the model's vocabulary: {list_chars(missing)}")
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        """The text of ids, any shape whose elements are ids in [0, V); read in C order."""
        return self.vocab.decode(np.asarray(ids).ravel())

    # ------------------------------------------------------------------ use

    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None) -> str:
        """Sample text: the prime, then `length` characters drawn one at a time.

        The same arguments give the text `charlstm sample` prints (see the module
        docstring). prime "" starts as at the beginning of a line; temperature 0 is
        greedy; top_k / top_p restrict the draw to the most likely characters (None:
        off); seed None draws a fresh one. Characters of prime outside the vocabulary
        are a ValueError that lists them.
        """
        return "".join(self.stream(prime, length, temperature, top_k, top_p, seed))

    def stream(self, prime: str = "", length: int = 500, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None) -> Iterator[str]:
        """`generate`, as an iterator: first the prime, then one character at a time."""
        check_count("length", length, 0)
        prime_ids, echo, seed = self._prime(prime, seed)
        return sample_text(numpy_step_fn(self.params, self.config),
                           zero_state(self.config, 1, self.dtype), self.vocab, prime_ids,
                           echo, length, temperature, top_k, 1.0 if top_p is None else top_p,
                           stream_rng(seed, 0))

    def generate_many(self, num_samples: int, prime: str = "", length: int = 500,
                      temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, seed: int | None = None) -> list[str]:
        """`num_samples` texts drawn side by side as one batch (very many split across
        charlstm.set_num_threads() workers, see charlstm.sample.generate_parallel).

        Text k is what `charlstm sample --num-samples N` prints as sample k+1 (less the
        final newline the CLI adds); text 0 is `generate`'s for the same arguments, up
        to the BLAS's rounding. The other arguments are `generate`'s.
        """
        check_count("num_samples", num_samples, 1)
        check_count("length", length, 0)
        prime_ids, echo, seed = self._prime(prime, seed)
        return sample_texts(self.params, self.config, self.vocab, prime_ids, echo, length,
                            temperature, top_k, 1.0 if top_p is None else top_p, seed,
                            int(num_samples))

    def _prime(self, prime: str, seed: int | None) -> tuple[np.ndarray, str, int]:
        """(prime ids, echo, seed) for a sample; seed None draws a fresh one."""
        self.encode(prime)  # a ValueError listing unknown characters, before any work
        seed = random_seed() if seed is None else seed
        prime_ids, echo = encode_prime(self.vocab, prime, seed=seed)
        return prime_ids, echo, seed

    def evaluate(self, text: str, batch_size: int | None = None,
                 seq_len: int | None = None) -> float:
        """Mean next-character cross-entropy of the model on text, in nats/char.

        Every character after the first is predicted once (as `charlstm eval --split
        all`): the text is cut into batch_size contiguous streams run side by side, each
        starting from a zero state that is then carried through it, seq_len characters
        per forward call. seq_len changes only the speed; more streams are faster but
        each starts without context (batch_size=1 scores the text as one sequence).
        Both default to the training run's. Characters outside the vocabulary are a
        ValueError that lists them.
        """
        check_count("batch_size", batch_size, 1, optional=True)
        check_count("seq_len", seq_len, 1, optional=True)
        ids = self.encode(text)
        if len(ids) < 2:
            raise ValueError("the text needs at least 2 characters to score one prediction")
        trained = self.train_config or TrainConfig()
        return evaluate_ids(self.params, self.config, ids, batch_size or trained.batch_size,
                        seq_len or trained.seq_len)


def load(path) -> LanguageModel:
    """The model in path: a run directory (its best.safetensors, else last.safetensors)
    or a checkpoint file. A missing, unreadable or invalid file (corrupt, not a
    checkpoint, metadata or weights out of range) is a charlstm.CheckpointError (a
    charlstm.errors.UserError) with a one-line message naming the file."""
    return LanguageModel.from_checkpoint(load_checkpoint(resolve_checkpoint(Path(path))))
