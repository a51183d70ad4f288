"""Starting, resuming and fine-tuning a training run: everything before the loop.

Shape legend: T window length, B streams, V vocab, L layers, H hidden.

A new run reads its text, checks that the model fits in memory, claims its run
directory (runs.py) and hands a fresh `Run` to the loop (loop.fit). Resuming
rebuilds the Run from the last checkpoint, refuses other data or changed settings
that would make it a different run, and continues exactly. What the caller is told
before the loop starts comes as a `Start` to its `on_start`; the words are the
caller's (the train command's).
"""

from __future__ import annotations

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
from .errors import UserError
from .finetune import extended_vocab, load_init
from .fsutil import atomic_write_bytes
from .guidance import More, finished_message, plain, resolve_more
from .keepsakes import truncate_samples
from .lockfile import run_dir_lock
from .loop import Outcome, Say, _stop_reason, fit, limit_reached
from .prepare import find_corpus, is_prepared, prepared_corpus
from .resources import check_fits
from .run_state import Run, TrainingError, new_run, run_from_checkpoint
from .runs import (
    CONFIG,
    LAST,
    LOG,
    SAMPLES,
    STDIN_COPY,
    check_run_dir,
    check_run_files,
    mark_run_dir,
    prepare_run_dir,
    resolve_paths,
    truncate_log,
    write_config,
)
from .schedules import horizon_steps
from .sources import STDIN, Source, read_source, specs
from .text import Vocab

STOPPING = ("max_steps", "epochs", "time_budget")
DEFAULT_TIME_BUDGET = 5.0  # minutes, when no stopping criterion is given (the demo)
# Settings a resumed run may change: they decide when to stop and what to write, not what
# any step computes (a new stopping point does move a cosine schedule's horizon).
# --patience and --eval-chars too: --eval-chars only bounds what validation scores;
# --patience only stops, its count of evaluations since the best is in the
# checkpoint, and raising it (or 0) is how a run stopped early is trained further.
RESUME_OVERRIDABLE = ("max_steps", "epochs", "time_budget", "eval_every", "log_every",
                      "checkpoint_every", "data", "out", "patience", "eval_chars")


class Start(NamedTuple):
    """What a run is about to do, for the caller to show (commands/train.py)."""

    run: Run
    corpus: Corpus
    batches: Batches
    path: str  # the text's name: its path, or what sources.Source.shown says
    resumed: bool
    added: int = 0  # characters --extend-vocab gave rows of their own


OnStart = Callable[[Start], None]


def load_text(config: TrainConfig) -> Source:
    """(text, sha256 of the text, its name) for config.data (charlstm.sources)."""
    return read_source(config.data, config.encoding_errors)


def load_data(config: TrainConfig, vocab: Vocab | None = None, expect_sha: str | None = None,
              run_dir: Path | None = None) -> tuple[Corpus, str, str]:
    """(corpus, sha256 of the decoded text, its name) for config.data: texts
    (charlstm.sources), a directory made by `charlstm prepare` (its ids mapped, not read),
    or a text so big that it is prepared on first use. vocab: see make_corpus.
    expect_sha: the checksum of run_dir's data (resuming); other data is refused."""
    found = prepared(config, vocab, expect_sha, run_dir)
    if found is not None:
        return found
    source = load_text(config)
    _check_same_data(source.sha256, expect_sha, source.shown, run_dir)
    return corpus_of(config, source, vocab), source.sha256, source.shown


def prepared(config: TrainConfig, vocab: Vocab | None = None, expect_sha: str | None = None,
             run_dir: Path | None = None) -> tuple[Corpus, str, str] | None:
    """load_data's answer when config.data is a prepared corpus (a `charlstm prepare`
    directory, or one text so big that it is prepared on first use into the cache),
    else None. The settings that need the text itself are refused with it."""
    data = config.data
    if not isinstance(data, str) or data == STDIN:
        return None
    prep = find_corpus(data, config.encoding_errors, _stderr,
                       lambda digest: _check_same_data(digest, expect_sha, data, run_dir))
    if prep is None:
        return None
    shown = str(prep.path) if is_prepared(data) else data
    _check_same_data(prep.text_sha256, expect_sha, shown, run_dir)
    for flag, on in (("--test-frac", config.test_frac), ("--extend-vocab", config.extend_vocab),
                     ("--unknown skip", config.unknown == "skip")):
        if on:
            raise UserError(f"{flag} needs the text itself, not the prepared corpus {shown}")
    return prepared_corpus(prep, config.val_frac, vocab), prep.text_sha256, shown


def corpus_of(config: TrainConfig, source: Source, vocab: Vocab | None = None) -> Corpus:
    """The splits of source's text; vocab: see make_corpus."""
    return make_corpus(source.text, config.val_frac, source=source.shown, vocab=vocab,
                       test_frac=config.test_frac, skip_unknown=config.unknown == "skip")


def keep_stdin(out: Path, config: TrainConfig, text: str) -> TrainConfig:
    """--data -: standard input can be read once, but a resume (and eval, sample's
    defaults, --config RUN/config.toml) needs the same text again, so the run keeps a
    copy, RUN_DIR/stdin.txt, and records that as its data."""
    atomic_write_bytes(out / STDIN_COPY, text.encode("utf-8"))
    copy = str((out / STDIN_COPY).resolve())
    data = [copy if spec == STDIN else spec for spec in specs(config.data)]
    return replace(config, data=data[0] if len(data) == 1 else tuple(data))


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
    loop.fit; on_start is told what the run is about to do, before its first step."""
    config = with_default_stop(resolve_paths(config))
    if specs(config.data).count(STDIN) > 1:
        raise UserError("--data names standard input (-) more than once; it is read once")
    init = load_init(config.init_from) if config.init_from else None
    source = None  # the text, unless the data is a prepared corpus
    found = prepared(config, None if init is None else Vocab(init.vocab))
    if found is not None:
        corpus, sha, shown = found
    else:
        source = load_text(config)
        vocab = None
        if init is not None:
            vocab = (extended_vocab(init, source.text) if config.extend_vocab
                     else Vocab(init.vocab))
        corpus, sha, shown = corpus_of(config, source, vocab), source.sha256, source.shown
    held = f"--val-frac {config.val_frac:g}" + (f" and --test-frac {config.test_frac:g}"
                                                   if config.test_frac else "")
    batches = Batches(corpus.train, config.batch_size, config.seq_len,
                      source=f"{shown} (after holding out {held})")
    check_fits(config.model_config(len(corpus.vocab)), config.optimizer, config.batch_size,
               config.seq_len, averaged=config.ema_decay > 0,
               corpus_chars=resident_chars(corpus))
    if say:
        warn_short_warmup(config, batches.windows_per_epoch, say)
    out = Path(config.out)
    check_run_dir(out)  # before the lock: its .lock is not written into a user's directory
    with run_dir_lock(out):
        if prepare_run_dir(out, force) and say:
            say(f"charlstm: {out} holds a run that stopped before its first checkpoint; "
                "starting it again")
        if source is not None and STDIN in specs(config.data):
            config = keep_stdin(out, config, source.text)
        run = new_run(config, corpus, sha, init)
        write_config(out, config)
        if on_start:
            added = len(corpus.vocab) - len(init.vocab) if init is not None else 0
            on_start(Start(run, corpus, batches, shown, resumed=False, added=added))
        outcome = fit(run, batches, eval_subset(corpus.val, config.eval_chars), out, say)
    if say:
        warn_warmup_not_reached(config, batches.windows_per_epoch, outcome, say)
    return outcome


def warn_short_warmup(config: TrainConfig, windows_per_epoch: int, say: Say) -> None:
    """Say so when a run's known length is shorter than its warmup: the learning rate
    would never reach --lr, silently. A warning rather than a warmup scaled to fit: the
    stored config then means what it says, and the user picks the number."""
    steps = horizon_steps(config, windows_per_epoch)
    if steps is None or steps >= config.warmup_steps:
        return
    reached = config.lr * steps / config.warmup_steps
    say(f"charlstm: warning: this run makes {steps} steps, fewer than its "
        f"{config.warmup_steps} warmup steps, so the learning rate stops at {reached:.3g} "
        f"and never reaches --lr {config.lr:g}; pass --warmup-steps "
        f"{max(1, steps // 10)} (a tenth of the run), or train longer")


def warn_warmup_not_reached(config: TrainConfig, windows_per_epoch: int, outcome: Outcome,
                            say: Say) -> None:
    """After a time-budget run (whose steps are known only now; a step or epoch limit
    was warned about by warn_short_warmup) that ended inside its warmup, say so."""
    if (outcome.interrupted or outcome.step >= config.warmup_steps
            or horizon_steps(config, windows_per_epoch) is not None):
        return
    say(f"charlstm: warning: the run ended at step {outcome.step}, inside its "
        f"{config.warmup_steps} warmup steps: the learning rate never reached --lr "
        f"{config.lr:g}; next time pass --warmup-steps {max(1, outcome.step // 10)} "
        "(a tenth of the run), or give it more time")


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
    # "+N" limits are placeholders (checked as N) until the run says where it is
    config = resume_config(stored, {k: plain(v) for k, v in overrides.items()}, out)
    expect = ckpt.meta.get("data_sha256") or ""
    # the checkpoint's vocabulary: a fine-tuned model's may hold more than its text
    found = prepared(config, Vocab(ckpt.vocab), expect, out)
    if found is not None:
        corpus, _, path = found
    else:
        source = load_text(config)
        path = source.shown
        _check_same_data(source.sha256, expect, path, out)
        if STDIN in specs(config.data):  # --resume --data -: the text kept at the start
            config = keep_stdin(out, config, source.text)
        corpus = corpus_of(config, source, Vocab(ckpt.vocab))
    batches = Batches(corpus.train, config.batch_size, config.seq_len, source=path)
    run = run_from_checkpoint(ckpt, config, out / LAST)
    if run.cursor.window >= batches.windows_per_epoch:
        raise TrainingError(f"{out / LAST}: meta cursor window {run.cursor.window} is past "
                            f"the {batches.windows_per_epoch} windows of an epoch of {path}")
    if any(isinstance(v, More) for v in overrides.values()):
        run.config = config = resume_config(stored, resolve_more(
            overrides, run.step, run.elapsed, batches.windows_per_epoch), out)
    reached = _reached(run, config, batches)
    if reached and not run.pending_eval:
        true_reason = _stop_reason(replace(run, config=stored), *_limits(stored, batches))
        if say:
            say(finished_message(
                out, run.step, run.elapsed, run.step / batches.windows_per_epoch,
                true_reason, reached, {k: v for k, v in overrides.items() if k in STOPPING},
                config.patience))
        return Outcome(out, true_reason or _stop_reason(run, *_limits(config, batches)),
                       run.step, ckpt.meta.get("val_loss"), run.best_val,
                       best_step=run.best_step)
    mark_run_dir(out)  # a run made before the marker existed
    truncate_samples(out / SAMPLES, run.step)
    bad = truncate_log(out / LOG, run.step)
    if bad and say:
        say(f"charlstm: dropped {bad} unreadable line(s) of {out / LOG} (damaged); "
            "resuming from the checkpoint")
    write_config(out, config)
    if on_start:
        on_start(Start(run, corpus, batches, path, resumed=True))
    return fit(run, batches, eval_subset(corpus.val, config.eval_chars), out, say)


def _limits(config: TrainConfig, batches: Batches) -> tuple[int | None, float | None]:
    """(horizon in steps, time budget in seconds) of config, as the loop reads them."""
    return (horizon_steps(config, batches.windows_per_epoch),
            config.time_budget * 60.0 if config.time_budget else None)


def _reached(run: Run, config: TrainConfig, batches: Batches) -> str | None:
    """The stopping setting of config that run has already reached, if any."""
    return limit_reached(replace(run, config=config), *_limits(config, batches))


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
