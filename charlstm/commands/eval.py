"""`charlstm eval CHECKPOINT`: a model's loss on a text, in nats, bits and perplexity."""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
from tqdm import tqdm

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..data import split3
from ..errors import UserError
from ..evaluate import evaluate
from ..language_model import training_config
from ..layers import LN2
from ..prepare import find_corpus, is_big_text, is_prepared, prepared_corpus
from ..runs import resolve_checkpoint
from ..sources import Source, read_source
from ..text import Vocab, list_chars
from .argtypes import integer, number

SPLITS = ("val", "train", "test", "all")


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="measure a model's loss on a text",
        description="Mean next-character cross-entropy of a checkpoint on a text (or one of "
        "its splits), in nats/char, bits/char and perplexity: forward only, the hidden state "
        "carried across windows, every character scored once. Defaults come from the "
        "training run stored in the checkpoint, so `charlstm eval RUN_DIR` reproduces its "
        "validation loss. A run directory means its best.safetensors, else last.safetensors.")
    p.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory or a .safetensors checkpoint")
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, metavar="PATH|NAME",
                   help="text to evaluate on: a file, a directory (of texts, or made by "
                   "charlstm prepare) or - (stdin), as train's --data takes them (default: "
                   "the text the model was trained on, however many files)")
    d.add_argument("--split", choices=SPLITS, default=None,
                   help="the held-out validation part, the training part, the test part "
                   "(train's --test-frac), or all of it (default: val for the text the "
                   "model was trained on, all for another)")
    d.add_argument("--val-frac", metavar="F", type=number(0, 1, high_open=True), default=None,
                   help="fraction held out at the end, as in training (default: the "
                   "model's own, else 0.1)")
    d.add_argument("--test-frac", metavar="F", type=number(0, 1, high_open=True),
                   default=None, help="fraction held out at the very end as the test split, "
                   "as in training (default: the model's own, else 0)")
    d.add_argument("--unknown", choices=("error", "skip"), default=None,
                   help="characters not in the model's vocabulary: error or skip (remove "
                   "them from the text) (default: as trained, else error)")
    d.add_argument("--encoding-errors", choices=("strict", "replace"), default=None,
                   help="invalid UTF-8: strict = error, replace = U+FFFD (default: as trained)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object instead of a table")
    w = p.add_argument_group("windows (results barely depend on them)")
    w.add_argument("--batch-size", metavar="B", type=integer(1), default=None,
                   help="contiguous streams evaluated side by side (default: as trained)")
    w.add_argument("--seq-len", metavar="T", type=integer(1), default=None,
                   help="characters per forward call (default: as trained)")
    p.set_defaults(run=run)


def resolve_eval_data(spec, trained: TrainConfig | None, errors: str,
                      flag: str = "--data") -> Source:
    """The text of --data (as train reads it: charlstm.sources), else the text the model
    was trained on, with a hint (naming the command's own `flag`) when that is gone."""
    if spec is not None:
        return read_source(spec, errors)
    if trained is None:
        raise UserError(f"this checkpoint does not say what it was trained on; pass {flag} FILE")
    try:
        return read_source(trained.data, errors)
    except UserError as e:
        raise UserError(f"the training text cannot be found ({e}); pass {flag} FILE",
                        exit_code=e.exit_code) from None


def split_ids(text: str, vocab: Vocab, val_frac: float, which: str,
              skip_unknown: bool, test_frac: float = 0.0) -> tuple[np.ndarray, int]:
    """(N,) ids of one split of text, cut where training cuts it (charlstm.data.split3),
    and how many unknown characters of that split were skipped.

    The cut is made on the text as it is; skipped unknown characters are removed
    afterwards, so the split boundary does not move when some are skipped.
    """
    missing = vocab.unknown(text)
    if missing and not skip_unknown:
        raise UserError(f"the text has characters not in the model's vocabulary: "
                        f"{list_chars(missing)}; pass --unknown skip to leave them out")
    ids = np.fromiter((vocab.index.get(c, -1) for c in text), dtype=np.int64, count=len(text))
    train, val, test = split3(ids, val_frac, test_frac)
    ids = {"train": train, "val": val, "test": test, "all": ids}[which]
    known = ids >= 0
    return ids[known], int(len(ids) - known.sum())


def say_skipped(skipped: int, where: str) -> None:
    """The note for --unknown skip, on stderr (stdout may be --json)."""
    if skipped:
        print(f"charlstm: skipped {skipped:,} character{'s' * (skipped > 1)} of {where} not "
              "in the model's vocabulary (--unknown skip)", file=sys.stderr)


def default_split(source: Source, meta: dict, data_flag) -> str:
    """val for the text the model was trained on (its held-out end is what it has not
    seen), all for any other text (none of it was seen, so all of it is scored)."""
    if data_flag is None:
        return "val"
    return "val" if meta.get("data_sha256") == source.sha256 else "all"


def _check_split(which: str, val_frac: float) -> None:
    if which == "val" and val_frac == 0:
        raise UserError("--split val with --val-frac 0 leaves nothing to evaluate; "
                        "pass --split all or a positive --val-frac")


def text_split(args, ckpt, trained: TrainConfig | None, val_frac: float):
    """(name, split name, ids, skipped) of texts (charlstm.sources), cut as training cut
    them (val, then test, at the end)."""
    errors = args.encoding_errors or (trained or TrainConfig()).encoding_errors
    source = resolve_eval_data(args.data, trained, errors)
    trained = trained or TrainConfig()
    test_frac = trained.test_frac if args.test_frac is None else args.test_frac
    which = args.split or default_split(source, ckpt.meta, args.data)
    _check_split(which, val_frac)
    if which == "test" and test_frac == 0:
        raise UserError("--split test: the model was trained without a test split "
                        "(--test-frac 0); pass --test-frac F as in training, or --split val")
    if val_frac + test_frac >= 1:
        raise UserError(f"--val-frac {val_frac:g} + --test-frac {test_frac:g} leave nothing "
                        "to train on; lower them")
    unknown = args.unknown or trained.unknown
    ids, skipped = split_ids(source.text, Vocab(ckpt.vocab), val_frac, which,
                             unknown == "skip", test_frac)
    return source.shown, which, ids, skipped


def prepared_split(spec: str, ckpt, val_frac: float, args, trained: TrainConfig):
    """(path, split name, ids, 0) of a prepared corpus, or of a text big enough to be
    prepared on first use (as train does): its ids mapped, never read whole; the model's
    vocabulary must be the corpus's."""
    prep = find_corpus(spec, args.encoding_errors or trained.encoding_errors,
                       lambda text: print(text, file=sys.stderr))
    trained_on = ckpt.meta.get("data_sha256") == prep.text_sha256
    which = args.split or ("val" if args.data is None or trained_on else "all")
    _check_split(which, val_frac)
    if which == "test":
        raise UserError(f"--split test: the prepared corpus {prep.path} has no test split; "
                        "evaluate the text itself, or --split val")
    corpus = prepared_corpus(prep, val_frac if which != "all" else 0.0, Vocab(ckpt.vocab))
    return prep.path, which, {"train": corpus.train, "val": corpus.val,
                              "all": prep.ids}[which], 0


def run(args) -> int:
    path = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(path)
    trained = training_config(ckpt.meta)
    settings = trained or TrainConfig()  # defaults for the settings below
    val_frac = settings.val_frac if args.val_frac is None else args.val_frac
    spec = args.data if args.data is not None or trained is None else trained.data
    if isinstance(spec, str) and spec != "-" and (is_prepared(spec) or is_big_text(spec)):
        data, which, ids, skipped = prepared_split(spec, ckpt, val_frac, args, settings)
    else:
        data, which, ids, skipped = text_split(args, ckpt, trained, val_frac)
    trained = settings
    test_frac = trained.test_frac if args.test_frac is None else args.test_frac
    say_skipped(skipped, f"the {which} split" if which != "all" else "the text")
    if len(ids) < 2:
        raise UserError(f"the {which} split of {data} has {len(ids)} character(s); "
                        "it needs at least 2 to score one prediction")
    batch_size = args.batch_size or trained.batch_size
    seq_len = args.seq_len or trained.seq_len
    start = time.perf_counter()
    # A bar on a terminal (tqdm disables itself otherwise), ticked by evaluate's
    # between-windows hook, which never asks to stop here.
    streams = min(batch_size, len(ids) - 1)
    windows = math.ceil(math.ceil((len(ids) - 1) / streams) / seq_len)
    with tqdm(total=windows, unit="window", disable=None, leave=False) as bar:
        loss = evaluate(ckpt.params, ckpt.config, ids, batch_size, seq_len,
                        abort=lambda: bar.update() and False)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({
            "checkpoint": str(path), "data": str(data), "split": which,
            "val_frac": val_frac if which != "all" else None,
            "test_frac": test_frac if which != "all" else None, "characters": len(ids) - 1,
            "split_characters": len(ids), "skipped": skipped,
            "loss": loss, "bits_per_char": loss / LN2, "perplexity": math.exp(loss),
            "seconds": round(seconds, 3), "batch_size": batch_size, "seq_len": seq_len}))
        return 0
    fracs = f"val-frac {val_frac:g}" + (f", test-frac {test_frac:g}" if test_frac else "")
    what = f"{which} split ({fracs})" if which != "all" else "all"
    print(f"checkpoint  {path}")
    # N characters make N - 1 predictions (the first has nothing before it): train's
    # header counts the split's N characters, its val loss scores the same N - 1.
    print(f"data        {data}: {what}, {len(ids):,} characters, {len(ids) - 1:,} "
          "characters scored (all but the first)")
    print(f"loss        {loss:.4f} nats/char")
    print(f"            {loss / LN2:.4f} bits/char")
    print(f"perplexity  {math.exp(loss):.4f}")
    print(f"time        {seconds:.1f}s ({(len(ids) - 1) / max(seconds, 1e-9):,.0f} chars/s, "
          f"batch {batch_size} x seq-len {seq_len})")
    return 0
