"""Sampling text from a model, one character per step, any backend.

Shape legend: B streams (samples generated side by side), V vocab, L layers, H hidden.

A backend is a step function, step_fn(ids (B,) int, state) -> (logits (B, V), state),
where state is a tuple of (L, B, H) arrays ((h, c) for an LSTM, (h,) for GRU/RNN).
`numpy_step_fn` wraps charlstm.model.step; charlstm.interop.onnx.ort_step_fn gives
the same thing over onnxruntime. `generate` runs the prime through the step function,
then draws characters with `sample_ids`:

    p ∝ exp((logits - max) / temperature)     in float64, so it cannot overflow
    keep the top_k most likely, then the smallest set whose mass reaches top_p
    renormalise and draw by inverse CDF; temperature 0 takes the argmax instead

Each stream has its own numpy Generator, so stream b's text depends only on its
generator: a batch of N streams and N single-stream runs give the same N texts (up to
the BLAS's rounding, see generate_parallel). `generate_parallel` runs many streams of
the NumPy model as one batch, very many split across the engine's worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from . import engine, model
from .config import ModelConfig
from .errors import UserError
from .text import Vocab, list_chars


def numpy_step_fn(params: dict, config: ModelConfig):
    """The NumPy model as a step function (see the module docstring)."""
    def step_fn(ids, state):
        return model.step(params, config, ids, state)
    return step_fn


def stream_rng(seed: int, b: int) -> np.random.Generator:
    """Stream b's generator: depends only on (seed, b), independent of the others."""
    return np.random.default_rng([seed, b])


def random_seed() -> int:
    """A fresh seed for when none is given (small enough to print and type back)."""
    return int(np.random.SeedSequence().entropy % 2**31)


def stream_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """Generators for streams 0..n-1."""
    return [stream_rng(seed, b) for b in range(n)]


def check_sampling_args(temperature: float, top_k: int | None, top_p: float) -> None:
    """ValueError for out-of-range sampling settings (the CLI turns it into a usage error)."""
    if not temperature >= 0.0 or not np.isfinite(temperature):  # also rejects NaN
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top-k must be a positive integer, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top-p must be in (0, 1], got {top_p}")


def probabilities(logits: np.ndarray, temperature: float, top_k: int | None = None,
                  top_p: float = 1.0) -> np.ndarray:
    """The distribution sampling draws from, in float64, each row summing to 1.

    Args:
        logits: (B, V), finite.  temperature > 0.
        top_k: keep only the k most likely characters (None: all).
        top_p: then keep the smallest most-likely set whose mass is >= top_p.
    Returns:
        p (B, V) float64; removed characters have exactly 0.
    """
    z = np.asarray(logits, dtype=np.float64)
    z_max = z.max(axis=1, keepdims=True)
    if not np.all(np.isfinite(z_max)):
        raise FloatingPointError("the model produced non-finite logits")
    # Subtract the max before dividing: (z - max) <= 0, so even a tiny
    # temperature gives exp(-inf) = 0 for the rest and exp(0) = 1 for the max.
    with np.errstate(over="ignore"):  # overflow to -inf is intended: exp(-inf) = 0
        p = np.exp((z - z_max) / temperature)
    B, V = p.shape
    k = V if top_k is None else min(top_k, V)
    if k < V or top_p < 1.0:
        # One sort, most likely first (ties: lower id first); decide what to keep in
        # sorted order, then scatter the decision back. Plain fancy indexing: the
        # *_along_axis helpers cost several times more per call at this size.
        rows = np.arange(B)[:, None]
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = p[rows, order]
        sorted_p[:, k:] = 0.0  # top-k
        if top_p < 1.0:
            cum = np.cumsum(sorted_p, axis=1)
            # Keep a character if the mass strictly before it is below top_p of the
            # (top-k) total: the most likely is always kept, the set just reaches top_p.
            sorted_p[(cum - sorted_p) >= top_p * cum[:, -1:]] = 0.0
        p[rows, order] = sorted_p
    return p / p.sum(axis=1, keepdims=True)


def sample_ids(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float,
               rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Draw one id per stream. logits: (B, V); rngs: B generators -> (B,) int64."""
    if temperature == 0.0:
        return np.asarray(logits).argmax(axis=1)
    p = probabilities(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p, axis=1)
    # u in (0, 1], so u * total is > 0 and <= the last cdf entry: the first index
    # whose cdf reaches it exists and has p > 0, whatever the rounding.
    u = np.array([1.0 - r.random() for r in rngs])
    return (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)


def check_prime_ids(prime_ids) -> np.ndarray:
    """prime_ids as a (P,) int64 array; ValueError unless P >= 1."""
    prime_ids = np.asarray(prime_ids, dtype=np.int64)
    if prime_ids.ndim != 1 or prime_ids.size == 0:
        raise ValueError("prime_ids must be a non-empty (P,) array of ids")
    return prime_ids


def generate_ids(step_fn, state: tuple, prime_ids, length: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float = 1.0,
                 rngs: Sequence[np.random.Generator] | None = None) -> Iterator[np.ndarray]:
    """Yield `length` steps of new ids, (B,) int64 each; the arguments as `generate`."""
    check_sampling_args(temperature, top_k, top_p)
    prime_ids = check_prime_ids(prime_ids)
    B = state[0].shape[1]
    if rngs is None:
        rngs = stream_rngs(0, B)
    if len(rngs) != B:
        raise ValueError(f"need one generator per stream: {B} streams, {len(rngs)} generators")
    for i in prime_ids:
        logits, state = step_fn(np.full(B, i, dtype=np.int64), state)
    for n in range(length):
        ids = sample_ids(logits, temperature, top_k, top_p, rngs)
        yield ids
        if n + 1 < length:  # the logits after the last character would go unused
            logits, state = step_fn(ids, state)


def generate(step_fn, state: tuple, vocab: Sequence[str], prime_ids, length: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
             rngs: Sequence[np.random.Generator] | None = None) -> Iterator[list[str]]:
    """Yield `length` steps of new characters, a list of B (one per stream) per step.

    Args:
        step_fn: (B,) ids, state -> (B, V) logits, state.
        state: initial state, tuple of (L, B, H) (e.g. model.zero_state(config, B)).
        vocab: vocab[i] is the character with id i.
        prime_ids: (P,) ids, P >= 1, fed to every stream before sampling; the
            logits after the last one give the first new character. Not yielded.
        rngs: B generators (default: stream_rngs(0, B)); unused when temperature is 0.
    """
    for ids in generate_ids(step_fn, state, prime_ids, length, temperature, top_k, top_p,
                            rngs):
        yield [vocab[i] for i in ids]


def generate_parallel(params: dict, config: ModelConfig, prime_ids, length: int,
                      rngs: Sequence[np.random.Generator], temperature: float = 1.0,
                      top_k: int | None = None, top_p: float = 1.0,
                      threads: int | None = None) -> np.ndarray:
    """B = len(rngs) streams from a zero state with the NumPy model, as one batch or,
    for very many, split across the engine's workers: (length, B) int64 ids.

    Each worker runs the whole step loop for its contiguous slice of streams, under
    the engine's one-thread BLAS, with no synchronisation per step; the slices are
    joined in order at the end. The loop is generate_ids over model.step, or for an
    cell that offers it (the fast LSTM with numba) the same loop compiled
    (engine.compiled_inference: steps and draws in one GIL-free call per chunk of
    steps, the same uniforms from each rng).
    Stream b draws only from rngs[b] and its own logits, so the ids are those of
    generate_ids over all B streams at once (or B single-stream runs), up to how the
    BLAS rounds a GEMM of another shape or orientation (the last bit of a float32
    logit, which moves a draw only when the uniform falls that close to a boundary of
    the distribution).
    threads: workers (default pool.get_num_threads()), while each slice keeps
    engine.COMPILED_SLICE_STREAMS streams; fewer streams run on one worker, with
    the BLAS threads the caller has.
    """
    check_sampling_args(temperature, top_k, top_p)  # raise here, not in a worker
    prime_ids = check_prime_ids(prime_ids)
    if not len(rngs):
        raise ValueError("need at least one stream (one generator per stream)")
    step_fn = numpy_step_fn(params, config)
    dtype = params["decoder.weight"].dtype
    compiled = engine.compiled_inference(params, config)

    def work(s: slice) -> np.ndarray:
        if compiled is not None:  # the same loop compiled, steps and draws
            return compiled.run.generate(compiled.weights, prime_ids, length, rngs[s],
                                         temperature, top_k, top_p)
        state = model.zero_state(config, s.stop - s.start, dtype)
        steps = generate_ids(step_fn, state, prime_ids, length, temperature, top_k, top_p,
                             rngs[s])
        return np.array(list(steps), dtype=np.int64).reshape(length, s.stop - s.start)

    parts = engine.map_streams(work, len(rngs), config.hidden_size, threads,
                               engine.COMPILED_SLICE_STREAMS)
    return np.concatenate(parts, axis=1)


def sample_text(step_fn, state: tuple, vocab: Vocab, prime_ids, echo: str, length: int,
                temperature: float, top_k: int | None, top_p: float,
                rng: np.random.Generator) -> Iterator[str]:
    """One sample as `charlstm sample` and LanguageModel.generate give it: `echo` (the
    prime as encoded, see encode_prime) if any, then `length` characters, one at a time.

    Args:
        step_fn: (1,) ids, state -> (1, V) logits, state.
        state: initial state, tuple of (L, 1, H).  prime_ids: (P,) ids, P >= 1.
        rng: the stream's generator (stream_rng(seed, k) for sample k).
    """
    if echo:
        yield echo
    for (c,) in generate(step_fn, state, vocab.chars, prime_ids, length, temperature, top_k,
                         top_p, [rng]):
        yield c


def sample_texts(params: dict, config: ModelConfig, vocab: Vocab, prime_ids, echo: str,
                 length: int, temperature: float, top_k: int | None, top_p: float,
                 seed: int, num_samples: int) -> list[str]:
    """Samples 0..num_samples-1 as `charlstm sample --num-samples N` prints them, drawn
    side by side with generate_parallel: sample k is `echo` then `length` characters
    from stream_rng(seed, k), the text sample_text gives for that generator."""
    ids = generate_parallel(params, config, prime_ids, length, stream_rngs(seed, num_samples),
                            temperature, top_k, top_p)
    return [echo + vocab.decode(ids[:, k]) for k in range(num_samples)]


def encode_prime(vocab: Vocab | Sequence[str], prime: str | None, skip_unknown: bool = False,
                 seed: int = 0) -> tuple[np.ndarray, str]:
    """The (P,) ids to run before sampling, and the text to echo in front of the sample.

    vocab: a Vocab, or the list of characters a checkpoint holds (Checkpoint.vocab).

    No prime (None, or nothing left after skipping unknown characters): a newline,
    not echoed, so the sample starts as if at the beginning of a line; if the
    vocabulary has no newline, one character drawn uniformly (from `seed`) and echoed.
    Unknown characters raise UserError listing them, or are dropped with skip_unknown.
    """
    if not isinstance(vocab, Vocab):
        vocab = Vocab(list(vocab))
    if prime:
        missing = vocab.unknown(prime)
        if missing and not skip_unknown:
            raise UserError(f"the prime has characters not in the model's vocabulary: "
                            f"{list_chars(missing)}; change the prime or pass --unknown skip")
        ids = vocab.encode(prime, skip_unknown=True)
        if ids.size:
            return ids, vocab.decode(ids)
    if "\n" in vocab.index:
        return np.array([vocab.index["\n"]]), ""
    i = int(np.random.default_rng(seed).integers(len(vocab)))
    return np.array([i]), vocab.chars[i]


def check_stop(stop) -> tuple[str, ...]:
    """The stop strings of generate's stop= (None, a string, or strings), none empty."""
    stops = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return stops


def until_stop(chars: Iterator[str], stops: tuple[str, ...]) -> Iterator[str]:
    """chars, one at a time, up to (not including) the first of stops they contain.

    A tail that could begin a stop string is held back until it cannot; the chars are
    consumed no further than the end of the first stop string, so drawing stops there.
    """
    if not stops:
        yield from chars
        return
    held = ""
    for c in chars:
        held += c
        found = [held.find(s) for s in stops if s in held]
        if found:
            yield from held[:min(found)]
            return
        keep = max((k for s in stops for k in range(1, len(s)) if held.endswith(s[:k])),
                   default=0)
        yield from held[:len(held) - keep]
        held = held[len(held) - keep:]
    yield from held
