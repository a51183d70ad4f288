"""`charlstm sample RUN_DIR|CHECKPOINT`: generate text, streamed to stdout as it is drawn."""

from __future__ import annotations

import sys

import numpy as np

from ..errors import UserError
from ..language_model import LanguageModel, load
from ..model import zero_state
from ..progress import silence_stdout
from ..resources import check_sampling_fits
from ..sample import (
    encode_prime,
    numpy_step_fn,
    random_seed,
    sample_text,
    sample_texts,
    stream_rng,
)
from ..text import read_text
from .argtypes import integer, number


def register(sub) -> None:
    p = sub.add_parser(
        "sample", help="generate text from a trained model",
        description="Generate text from a checkpoint (a run directory means its "
        "best.safetensors, else its last.safetensors), streaming characters to stdout.")
    p.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory or a .safetensors checkpoint")
    s = p.add_argument_group("sampling")
    s.add_argument("--length", metavar="N", type=integer(0), default=500,
                   help="characters to generate per sample, after the prime (default 500)")
    s.add_argument("--temperature", metavar="T", type=number(0), default=1.0,
                   help="divide logits by this; <1 is safer, >1 wilder, 0 greedy (default 1)")
    s.add_argument("--top-k", metavar="K", type=integer(1), default=None,
                   help="draw only from the K most likely characters (default: all)")
    s.add_argument("--top-p", metavar="P", type=number(0, 1, low_open=True), default=1.0,
                   help="then only from the smallest set holding this much probability "
                   "(nucleus sampling; default 1 = off)")
    s.add_argument("--num-samples", metavar="N", type=integer(1), default=1,
                   help="independent samples, printed one after another (default 1); with "
                   "the numpy backend they are drawn side by side as one batch (very many "
                   "split across the --threads workers), each printed whole once all are "
                   "drawn")
    s.add_argument("--seed", metavar="S", type=integer(0), default=None,
                   help="random seed; the same seed gives the same text (default: random, "
                   "printed to stderr)")
    r = p.add_argument_group("prime")
    r.add_argument("--prime", default=None, metavar="TEXT",
                   help="text to condition on, echoed before the sample (default: start "
                   "as at the beginning of a line)")
    r.add_argument("--prime-file", default=None, metavar="FILE",
                   help="read the prime from a UTF-8 text file (for long or multi-line "
                   "primes) instead of --prime")
    r.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="prime characters the model has never seen: error (default) or skip")
    b = p.add_argument_group("backend")
    b.add_argument("--backend", choices=("numpy", "onnxruntime"), default="numpy",
                   help="run the model with NumPy (default) or onnxruntime (needs the "
                   "onnx extra)")
    p.set_defaults(run=run)


def make_step_fn(model: LanguageModel, backend: str):
    """(step_fn, state dtype) for the chosen backend."""
    if backend == "numpy":
        return numpy_step_fn(model.params, model.config), model.dtype
    try:
        from ..interop.onnx import ort_step_fn
    except UserError:  # interop.onnx refuses to load without the onnx package
        raise UserError("the onnxruntime backend needs the onnx package (it builds the graph "
                        "onnxruntime runs); install it with pip install 'charlstm[onnx]' or "
                        "use --backend numpy", exit_code=1) from None
    return ort_step_fn(model.checkpoint()), np.float32


def samples(model: LanguageModel, args, prime_ids, echo: str, seed: int):
    """Per sample k (from stream_rng(seed, k)), an iterable of its text's pieces.

    One sample, or the onnxruntime backend: one stream at a time, each character
    yielded as it is drawn. Several samples with NumPy: all side by side as one batch
    (sample_texts; very many split across the engine's workers), each whole; the same
    texts (sample k depends on (seed, k) only), up to the BLAS's rounding."""
    sampling = (args.length, args.temperature, args.top_k, args.top_p)
    if args.backend == "numpy" and args.num_samples > 1:
        texts = sample_texts(model.params, model.config, model.vocab, prime_ids, echo,
                             *sampling, seed, args.num_samples)
        return ([text] for text in texts)
    step_fn, dtype = make_step_fn(model, args.backend)
    return (sample_text(step_fn, zero_state(model.config, 1, dtype), model.vocab, prime_ids,
                        echo, *sampling, stream_rng(seed, k))
            for k in range(args.num_samples))


def run(args) -> int:
    if args.prime_file is not None:
        if args.prime is not None:
            raise UserError("give the prime once: --prime TEXT or --prime-file FILE")
        args.prime = read_text(args.prime_file)
    model = load(args.checkpoint)
    vocab = model.vocab
    seed = random_seed() if args.seed is None else args.seed
    if args.seed is None and _seed_matters(args, vocab):
        print(f"charlstm: seed {seed} (pass --seed {seed} to repeat this sample)",
              file=sys.stderr)
    prime_ids, echo = encode_prime(vocab, args.prime, args.unknown == "skip", seed)
    if args.prime and len(echo) < len(args.prime):
        print(f"charlstm: skipped {len(args.prime) - len(echo)} prime characters not in "
              "the vocabulary", file=sys.stderr)
    if args.backend == "numpy" and args.num_samples > 1:  # side by side: all in memory
        check_sampling_fits(model.config, args.num_samples, args.length, len(prime_ids))
    out = sys.stdout
    try:
        for k, pieces in enumerate(samples(model, args, prime_ids, echo, seed)):
            if args.num_samples > 1:
                gap = "\n" if k else ""
                out.write(f"{gap}=== sample {k + 1}/{args.num_samples} ===\n")
            last = ""
            for c in pieces:
                out.write(c)
                out.flush()
                last = c
            if last and not last.endswith("\n"):
                out.write("\n")
        out.flush()
    except BrokenPipeError:
        # `charlstm sample ... | head`: the reader left; stop quietly, as cat does.
        silence_stdout()
    return 0


def _seed_matters(args, vocab) -> bool:
    """Whether the text depends on the seed, so that it is worth printing: not when
    every step takes the likeliest character (temperature 0, or --top-k 1) after a
    prime that is given (or a newline), not drawn at random (encode_prime)."""
    greedy = args.temperature == 0 or args.top_k == 1
    drawn = "\n" not in vocab.index and not any(c in vocab.index for c in args.prime or "")
    return not greedy or drawn
