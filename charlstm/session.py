"""Starting, resuming and fine-tuning a training run: everything before the loop.

Shape legend: T window length, B streams, V vocab, L layers, H hidden.

A new run reads its text, checks that the model fits in memory, claims its run
directory (runs.py) and hands a fresh `Run` to the loop (train.fit). Resuming
rebuilds the Run from the last checkpoint, refuses other data or changed settings
that would make it a different run, and continues exactly. What the caller is told
before the loop starts comes as a `Start` to its `on_start`; the words are the
caller's (the train command's).
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import load_checkpoint
from .config import TrainConfig, name_flag
from .data import Batches, Corpus, eval_subset, make_corpus
from .datasets import cache_dir, resolve_data
from .errors import UserError
from .finetune import load_init
from .lockfile import run_dir_lock
from .prepare import (
    cached_corpus,
    file_sha256,
    is_big_text,
    is_prepared,
    open_prepared,
    prepared_corpus,
)
from .resources import check_fits, check_text_fits
from .run_state import Run, TrainingError, new_run, run_from_checkpoint
from .runs import (
    CONFIG,
    LAST,
    LOG,
    check_run_dir,
    check_run_files,
    mark_run_dir,
    prepare_run_dir,
    resolve_paths,
    truncate_log,
    write_config,
)
from .schedules import horizon_steps
from .text import Vocab, read_text
from .train import Outcome, Say, _stop_reason, fit

STOPPING = ("max_steps", "epochs", "time_budget")
DEFAULT_TIME_BUDGET = 5.0  # minutes, when no stopping criterion is given (the demo)
# Settings a resumed run may change: they decide when to stop and what to write, not what
# any step computes (a new stopping point does move a cosine schedule's horizon).
RESUME_OVERRIDABLE = ("max_steps", "epochs", "time_budget", "eval_every", "eval_chars",
                      "log_every", "checkpoint_every", "data", "out")


class Start(NamedTuple):
    """What a run is about to do, for the caller to show (commands/train.py)."""

    run: Run
    corpus: Corpus
    batches: Batches
    path: str  # the text's path
    resumed: bool


OnStart = Callable[[Start], None]


def load_text(config: TrainConfig) -> tuple[str, str, str]:
    """(text, sha256 of the decoded text, path) for config.data."""
    path = resolve_data(config.data)
    check_text_fits(path)
    text = read_text(path, config.encoding_errors)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest(), str(path)


def load_data(config: TrainConfig, vocab: Vocab | None = None, expect_sha: str | None = None,
              run_dir: Path | None = None) -> tuple[Corpus, str, str]:
    """(corpus, sha256 of the decoded text, path) for config.data: a text, or a directory
    made by `charlstm prepare` (its ids mapped, not read; the checksum recorded there), or
    a text so big that it is prepared on first use, into the cache (prepare.cached_corpus).
    vocab: see make_corpus. expect_sha: the checksum of run_dir's data (resuming); other
    data is refused before it is encoded."""
    if is_prepared(config.data):
        prep = open_prepared(config.data)
        sha, path = prep.text_sha256, str(prep.path)
        _check_same_data(sha, expect_sha, path, run_dir)
        return prepared_corpus(prep, config.val_frac, vocab), sha, path
    if is_big_text(config.data):
        digest = file_sha256(config.data)
        if config.encoding_errors == "strict":  # the text's checksum: refuse before making
            _check_same_data(digest, expect_sha, config.data, run_dir)
        prep = cached_corpus(config.data, digest, config.encoding_errors, cache_dir(),
                             _stderr)
        _check_same_data(prep.text_sha256, expect_sha, config.data, run_dir)
        return (prepared_corpus(prep, config.val_frac, vocab), prep.text_sha256,
                config.data)
    text, sha, path = load_text(config)
    _check_same_data(sha, expect_sha, path, run_dir)
    return make_corpus(text, config.val_frac, source=path, vocab=vocab), sha, path


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _check_same_data(sha: str, expect_sha: str | None, path: str, run_dir) -> None:
    if expect_sha is not None and sha != expect_sha:
        raise TrainingError(f"{path} is not the text this run was trained on (its checksum "
                            "differs); resume with the original --data, or fine-tune on "
                            f"this text with --init-from {shlex.quote(str(run_dir))}",
                            exit_code=2)


def resident_chars(corpus: Corpus) -> int:
    """Characters of the corpus held in memory: none when they are a prepared map."""
    return 0 if isinstance(corpus.train, np.memmap) else len(corpus.train) + len(corpus.val)


def with_default_stop(config: TrainConfig) -> TrainConfig:
    """No --max-steps, --epochs or --time-budget: train for DEFAULT_TIME_BUDGET minutes."""
    if config.max_steps is None and config.epochs is None and config.time_budget is None:
        return replace(config, time_budget=DEFAULT_TIME_BUDGET)
    return config


def start_training(config: TrainConfig, force: bool = False, say: Say | None = None,
                   on_start: OnStart | None = None) -> Outcome:
    """A new run in config.out (see runs.resolve_paths, with_default_stop); say as in
    train.fit; on_start is told what the run is about to do, before its first step."""
    config = with_default_stop(resolve_paths(config))
    init = load_init(config.init_from) if config.init_from else None
    corpus, sha, path = load_data(config, None if init is None else Vocab(init.vocab))
    batches = Batches(corpus.train, config.batch_size, config.seq_len,
                      source=f"{path} (after holding out --val-frac {config.val_frac:g})")
    check_fits(config.model_config(len(corpus.vocab)), config.optimizer, config.batch_size,
               config.seq_len, averaged=config.ema_decay > 0,
               corpus_chars=resident_chars(corpus))
    out = Path(config.out)
    check_run_dir(out)  # before the lock: its .lock is not written into a user's directory
    with run_dir_lock(out):
        if prepare_run_dir(out, force) and say:
            say(f"charlstm: {out} holds a run that stopped before its first checkpoint; "
                "starting it again")
        run = new_run(config, corpus, sha, init)
        write_config(out, config)
        if on_start:
            on_start(Start(run, corpus, batches, path, resumed=False))
        return fit(run, batches, eval_subset(corpus.val, config.eval_chars), out, say)


def resume_training(run_dir, overrides: dict | None = None, say: Say | None = None,
                    on_start: OnStart | None = None) -> Outcome:
    """Continue the run in run_dir from its last checkpoint, exactly; say and on_start as
    in start_training.

    overrides: settings to change, only those in RESUME_OVERRIDABLE (stopping,
    logging, a moved data file); the data must be the same text.
    """
    out = Path(run_dir)
    if not out.is_dir():
        raise UserError(f"--resume {out}: no such run directory")
    if not (out / LAST).is_file():
        if (out / CONFIG).is_file():
            raise UserError(f"--resume {out}: the run stopped before its first checkpoint "
                            f"(every --checkpoint-every steps), so there is nothing to "
                            f"resume; start it again with: charlstm train --config "
                            f"{shlex.quote(str(out / CONFIG))}")
        raise UserError(f"--resume {out}: no {LAST} in it; is it a run directory written "
                        "by charlstm train?")
    with run_dir_lock(out):
        return _resume_locked(out, overrides or {}, say, on_start)


def _resume_locked(out: Path, overrides: dict, say: Say | None,
                   on_start: OnStart | None) -> Outcome:
    check_run_files(out)
    ckpt = load_checkpoint(out / LAST)
    try:
        stored = TrainConfig.from_dict(ckpt.meta["train_config"])
    except KeyError:
        raise TrainingError(f"{out / LAST} holds no training config (a model-only "
                            "checkpoint?); it cannot be resumed, but a new run can start "
                            f"from its weights with --init-from {shlex.quote(str(out))}",
                            exit_code=2) from None
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{out / LAST} holds no usable training config: {e}") from None
    config = resume_config(stored, overrides, out)
    # the checkpoint's vocabulary: a fine-tuned model's may hold more than its text
    corpus, _, path = load_data(config, Vocab(ckpt.vocab),
                                ckpt.meta.get("data_sha256") or "", out)
    batches = Batches(corpus.train, config.batch_size, config.seq_len, source=path)
    run = run_from_checkpoint(ckpt, config, out / LAST)
    if run.cursor.window >= batches.windows_per_epoch:
        raise TrainingError(f"{out / LAST}: meta cursor window {run.cursor.window} is past "
                            f"the {batches.windows_per_epoch} windows of an epoch of {path}")
    reason = _stop_reason(run, horizon_steps(config, batches.windows_per_epoch),
                          config.time_budget * 60.0 if config.time_budget else None)
    if reason and not run.pending_eval:
        raise_it = ("give a larger one" if any(k in overrides for k in STOPPING)
                    else "give a new limit, --max-steps N, --epochs E or --time-budget MIN "
                    "(it replaces the run's limits)")
        if say:
            say(f"charlstm: {out} is already finished ({reason} at step {run.step}); "
                f"{raise_it} to train further")
        return Outcome(out, reason, run.step, ckpt.meta.get("val_loss"), run.best_val)
    mark_run_dir(out)  # a run made before the marker existed
    bad = truncate_log(out / LOG, run.step)
    if bad and say:
        say(f"charlstm: dropped {bad} unreadable line(s) of {out / LOG} (damaged); "
            "resuming from the checkpoint")
    write_config(out, config)
    if on_start:
        on_start(Start(run, corpus, batches, path, resumed=True))
    return fit(run, batches, eval_subset(corpus.val, config.eval_chars), out, say)


def resume_config(stored: TrainConfig, overrides: dict, out: Path) -> TrainConfig:
    """The stored config with allowed overrides; changing anything else is refused,
    because the continued run would no longer be the same run.

    Stopping limits given replace all the stored ones: `--max-steps 6800` trains a run
    that ended on its --time-budget to step 6800, rather than stopping at once because
    the old budget is still spent.
    """
    changed = sorted(k for k, v in overrides.items()
                     if k not in RESUME_OVERRIDABLE and getattr(stored, k) != v)
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise UserError(f"cannot change {flags} when resuming (only stopping, logging and "
                        f"--data location can change); start a new run with --config "
                        f"{shlex.quote(str(out / CONFIG))} --out NEW_RUN_DIR and your "
                        f"changes instead, or fine-tune this one on new text with "
                        f"--init-from {shlex.quote(str(out))}")
    if any(k in overrides for k in STOPPING):
        stored = replace(stored, **{k: None for k in STOPPING})
    try:
        config = replace(stored, **{k: v for k, v in overrides.items() if k != "out"})
    except ValueError as e:
        raise UserError(name_flag(str(e), overrides)) from None
    return replace(resolve_paths(replace(config, out=str(out))), out=str(out))
