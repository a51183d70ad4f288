"""The training loop: truncated BPTT, clipping, schedules, logging, exact resume.

Shape legend: T window length, B streams, V vocab, L layers, H hidden.

One step reads the (T, B) window at the data cursor, runs the model's pure
forward/backward with the hidden state carried from the previous window (zeros
at the start of an epoch), clips the global gradient norm, and applies one
optimizer update at the scheduled learning rate. Everything that step depends
on is in a `Run`: parameters, optimizer slots and step count, data cursor,
carried state, the dropout generator, best validation loss, elapsed time. A
checkpoint stores all of it (arrays as tensors, the rest as JSON meta), so
`charlstm train --resume RUN_DIR` continues bit for bit as if never stopped.

This module owns the loop, the schedule's use and what a checkpoint holds; where the
files go is runs.py's, and what is shown is the caller's (see `Say`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import engine, model
from ._version import __version__
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig, describe_dropouts, name_flag
from .data import Batches, Corpus, Cursor, make_corpus
from .datasets import resolve_data
from .errors import UserError, os_error_message
from .evaluate import evaluate
from .finetune import load_init
from .layers import LN2
from .lockfile import run_dir_lock
from .network import CharLSTM
from .optim import Optimizer, clip_grad_norm, ema_update, make_optimizer
from .penalties import Penalty
from .progress import Progress, StopSignals
from .resources import check_fits, check_text_fits
from .runs import (
    BEST,
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
from .schedules import horizon_steps, learning_rate
from .text import Vocab, read_text

STOPPING = ("max_steps", "epochs", "time_budget")
DTYPE = np.float32
# The trainer prints nothing: its progress lines and messages go to a say(text) the caller
# gives (the train command passes progress.echo), or nowhere.
Say = Callable[[str], None]
DEFAULT_TIME_BUDGET = 5.0  # minutes, when no stopping criterion is given (the demo)
# With --ema-decay, a checkpoint's model tensors are the averaged weights (what every
# reader of a checkpoint uses) and the raw training weights are kept beside the optimizer
# slots under this prefix, for an exact resume.
RAW = "train.raw."
# Settings a resumed run may change: they decide when to stop and what to write, not what
# any step computes (a new stopping point does move a cosine schedule's horizon).
RESUME_OVERRIDABLE = ("max_steps", "epochs", "time_budget", "eval_every", "log_every",
                      "checkpoint_every", "data", "out")


class TrainingError(UserError):
    """Training cannot go on, in one line: exit 1 when it failed (diverged, the disk
    filled), 2 when what it was given cannot be resumed (other data, a model-only file)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message, exit_code=exit_code)


# ----------------------------------------------------------------------------- run state

@dataclass
class LogWindow:
    """Sums over the steps since the last log record (saved too, so a resumed run
    writes the same records as one that never stopped)."""

    loss: float = 0.0
    norm: float = 0.0
    seconds: float = 0.0
    steps: int = 0
    chars: int = 0
    lr: float | None = None  # of the latest step
    penalty: float = 0.0  # AR + TAR (optimised, but not in `loss`)

    def add(self, loss: float, norm: float, chars: int, seconds: float, lr: float,
            penalty: float = 0.0) -> None:
        self.lr = lr
        self.loss += loss
        self.penalty += penalty
        self.norm += norm
        self.chars += chars
        self.seconds += seconds
        self.steps += 1


@dataclass
class Run:
    """Everything a training step reads or changes; a checkpoint holds all of it."""

    config: TrainConfig
    model_config: ModelConfig
    vocab: Vocab
    params: dict  # name -> float32 array, PyTorch names
    optimizer: Optimizer
    state: tuple  # carried hidden state, each (L, B, H)
    cursor: Cursor
    rng: np.random.Generator  # dropout masks
    data_sha256: str  # of the decoded text: resuming on different data is refused
    step: int = 0  # updates applied
    best_val: float | None = None
    best_step: int | None = None
    elapsed: float = 0.0  # seconds of training, summed over resumes
    window: LogWindow = field(default_factory=LogWindow)  # steps not logged yet
    pending_eval: bool = False  # a signal cut this step's validation short: redo it
    average: dict | None = None  # moving average of params (--ema-decay), or None

    @property
    def model_params(self) -> dict:
        """The weights the run's model is: the average if there is one, else params.
        Validation uses them, and checkpoints store them as the model."""
        return self.params if self.average is None else self.average

    def checkpoint(self, val_loss: float | None = None) -> Checkpoint:
        arrays = {f"optim.{k}": v for k, v in self.optimizer.state_arrays().items()}
        arrays.update({f"train.state.{j}": s for j, s in enumerate(self.state)})
        if self.average is not None:
            arrays.update({RAW + k: v for k, v in self.params.items()})
        meta = {
            "train_config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.cursor.epoch,
            "cursor": self.cursor.to_dict(),
            "optimizer_step": self.optimizer.t,
            "rng": {"dropout": self.rng.bit_generator.state},
            "val_loss": val_loss,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "elapsed_s": self.elapsed,
            "log_window": asdict(self.window),
            "pending_eval": self.pending_eval,
            "data_sha256": self.data_sha256,
            "package_version": __version__,
        }
        return Checkpoint(self.model_config, list(self.vocab.chars), self.model_params,
                          arrays, meta)


def new_run(config: TrainConfig, corpus: Corpus, data_sha256: str,
            init: Checkpoint | None = None) -> Run:
    """Step 0 of a run: fresh weights from config.seed, or init's weights (fine-tuning:
    same shape and vocabulary, the caller checks); fresh optimizer and schedule."""
    model_config = config.model_config(len(corpus.vocab))
    params = None if init is None else {k: v.astype(DTYPE) for k, v in init.params.items()}
    net = CharLSTM(model_config, seed=config.seed, dtype=DTYPE, params=params)
    optimizer = make_optimizer(config.optimizer, net.params, config.lr, config.momentum,
                               config.weight_decay)
    # Dropout has its own stream, so changing the dropout rate never changes the init.
    rng = np.random.default_rng([config.seed, 1])
    state = model.zero_state(model_config, config.batch_size, DTYPE)
    # the start value is never used: the first update sets the average to the weights
    average = {k: v.copy() for k, v in net.params.items()} if config.ema_decay else None
    return Run(config, model_config, corpus.vocab, net.params, optimizer, state, Cursor(),
               rng, data_sha256, average=average)


def run_from_checkpoint(ckpt: Checkpoint, config: TrainConfig, path) -> Run:
    """Rebuild a Run from a checkpoint written by Run.checkpoint (config may differ from
    the stored one only in RESUME_OVERRIDABLE settings; the caller checks)."""
    meta = ckpt.meta
    try:
        params = {k: np.array(v, dtype=DTYPE) for k, v in ckpt.params.items()}
        average = None
        if config.ema_decay:  # the model tensors are the average; the raw weights beside
            average, params = params, {k: np.array(ckpt.arrays[RAW + k], dtype=DTYPE)
                                       for k in params}
        optimizer = make_optimizer(config.optimizer, params, config.lr, config.momentum,
                                   config.weight_decay)
        optimizer.load_state_arrays({k[len("optim."):]: v for k, v in ckpt.arrays.items()
                                     if k.startswith("optim.")}, meta["optimizer_step"])
        n_state = sum(k.startswith("train.state.") for k in ckpt.arrays)
        state = tuple(np.array(ckpt.arrays[f"train.state.{j}"], dtype=DTYPE)
                      for j in range(n_state))
        expected = model.zero_state(ckpt.config, config.batch_size, DTYPE)
        if [s.shape for s in state] != [s.shape for s in expected]:
            raise ValueError("carried state does not match the model")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = meta["rng"]["dropout"]
        return Run(config, ckpt.config, Vocab(ckpt.vocab), params, optimizer, state,
                   Cursor.from_dict(meta["cursor"]), rng, meta["data_sha256"],
                   step=int(meta["step"]), best_val=meta["best_val_loss"],
                   best_step=meta["best_step"], elapsed=float(meta["elapsed_s"]),
                   window=LogWindow(**meta.get("log_window", {})),
                   pending_eval=bool(meta.get("pending_eval", False)), average=average)
    except KeyError as e:
        raise TrainingError(f"{path} cannot be resumed: it lacks the training state "
                            f"{e.args[0]!r} (a model-only checkpoint?); a new run can start "
                            f"from its weights with --init-from {shlex.quote(str(path))}",
                            exit_code=2) from None
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{path} cannot be resumed (not a training checkpoint, or "
                            f"incomplete: {e})") from None


# ----------------------------------------------------------------------------- one step

def train_step(run: Run, batches: Batches, lr: float) -> tuple[float, float, float]:
    """One truncated-BPTT update in place. Returns (loss in nats/char, grad norm, AR +
    TAR penalty); the update follows the gradient of loss + penalty.

    Raises TrainingError, before anything is changed, if the loss or the gradient
    is not finite.
    """
    cfg = run.model_config
    if run.cursor.window == 0:  # a new epoch starts from a fresh state
        run.state = model.zero_state(cfg, batches.batch_size, DTYPE)
    x, y = batches.get(run.cursor)
    T, B = x.shape
    # masks for the whole batch, whatever the thread count: resuming draws the same ones
    masks = model.make_dropout_masks(cfg, T, B, run.rng, DTYPE)
    weight_masks = model.make_weight_masks(cfg, run.rng, DTYPE)
    penalty = Penalty(run.config.ar, run.config.tar)
    loss, grads, final_state, _, value = engine.loss_and_grads(
        run.params, cfg, x, y, run.state, masks, penalty=penalty, weight_masks=weight_masks)
    if not math.isfinite(loss):
        raise TrainingError(f"the loss became {loss} at step {run.step + 1} (lr {lr:.3g})")
    norm = clip_grad_norm(grads, run.config.clip)  # the norm before clipping
    if not math.isfinite(norm):  # checked before any parameter is touched
        raise TrainingError(f"the gradient norm became {norm} at step {run.step + 1} "
                            f"(lr {lr:.3g})")
    run.optimizer.step(run.params, grads, lr)
    if run.average is not None:
        ema_update(run.average, run.params, run.config.ema_decay, run.optimizer.t)
    run.state = final_state
    run.cursor = batches.advance(run.cursor)
    run.step += 1
    return loss, norm, value


# ----------------------------------------------------------------------------- the loop

@dataclass
class Outcome:
    out_dir: Path
    reason: str  # why training stopped
    step: int
    val_loss: float | None  # at the end (None when interrupted or no validation split)
    best_val: float | None
    interrupted: bool = False


def _stop_reason(run: Run, horizon: int | None, budget_s: float | None) -> str | None:
    cfg = run.config
    if cfg.max_steps is not None and run.step >= cfg.max_steps:
        return f"reached --max-steps {cfg.max_steps}"
    if horizon is not None and run.step >= horizon:
        return f"reached --epochs {cfg.epochs:g}"
    if budget_s is not None and run.elapsed >= budget_s:
        return f"reached --time-budget {cfg.time_budget:g} min"
    return None


def _progress_fraction(run: Run, horizon: int | None, budget_s: float | None) -> float:
    warm = run.config.warmup_steps
    if horizon is not None:
        return (run.step - warm) / max(1, horizon - warm)
    return run.elapsed / budget_s if budget_s else 0.0


def fit(run: Run, batches: Batches, val_ids: np.ndarray, out_dir: Path,
        say: Say | None = None) -> Outcome:
    """Train until a stopping criterion or a signal; write log, checkpoints, best.
    Progress lines and messages go to say (None: a silent run; the CLI passes echo).

    A failed write (a full disk, say) stops training with a TrainingError that names
    the file; every checkpoint is written atomically, so the last one is intact.
    """
    try:
        return _fit(run, batches, val_ids, out_dir, say)
    except OSError as e:
        if (out_dir / LAST).is_file():
            kept = (f"{_last_saved(out_dir)} is intact: resume with charlstm train --resume "
                    f"{shlex.quote(str(out_dir))}")
        else:  # before the first checkpoint, or the run directory was moved away
            kept = f"no checkpoint is left in {out_dir}"
        raise TrainingError(f"{os_error_message(e)}. Training stopped at step {run.step}; "
                            f"{kept}") from None


def _fit(run: Run, batches: Batches, val_ids: np.ndarray, out_dir: Path,
         say: Say | None) -> Outcome:
    cfg = run.config
    horizon = horizon_steps(cfg, batches.windows_per_epoch)
    budget_s = cfg.time_budget * 60.0 if cfg.time_budget is not None else None
    progress = Progress(horizon, run.step, say)
    start, elapsed0 = time.perf_counter(), run.elapsed
    val_loss, reason = None, None
    with open(out_dir / LOG, "a", encoding="utf-8") as log, StopSignals(progress) as stop:
        if run.pending_eval:  # the validation pass a signal cut short, as if never cut
            run.pending_eval = False
            val_loss = _validate(run, val_ids, out_dir, progress)
            _log(run, batches, val_loss, log, progress)
        # stop() first: a signal during the last step is an interruption, not the end
        while not stop() and not (reason := _stop_reason(run, horizon, budget_s)):
            lr = learning_rate(cfg, run.step, _progress_fraction(run, horizon, budget_s))
            t0 = time.perf_counter()
            try:
                loss, norm, penalty = train_step(run, batches, lr)
            except TrainingError as e:
                progress.close()
                raise TrainingError(f"{e}; training stopped. The last checkpoint "
                                    f"{_last_saved(out_dir)} is intact; try a lower --lr "
                                    "or --clip") from None
            now = time.perf_counter()
            run.elapsed = elapsed0 + (now - start)
            run.window.add(loss, norm, batches.batch_size * batches.seq_len, now - t0, lr,
                           penalty)
            progress.update()
            # the last step always gets a validation pass and a log record
            last = _stop_reason(run, horizon, budget_s) is not None
            val_loss = None
            if len(val_ids) and (last or cfg.eval_every and run.step % cfg.eval_every == 0):
                val_loss = _validate(run, val_ids, out_dir, progress, abort=stop)
                if val_loss is None:  # cut short by a signal: redone first on resume
                    run.pending_eval = True
                    continue
            if last or run.step % cfg.log_every == 0 or val_loss is not None:
                _log(run, batches, val_loss, log, progress)
            if not last and run.step % cfg.checkpoint_every == 0:
                save_checkpoint(out_dir / LAST, run.checkpoint(val_loss))
        save_checkpoint(out_dir / LAST, run.checkpoint(val_loss))
    progress.close()
    if reason is not None:
        return Outcome(out_dir, reason, run.step, val_loss, run.best_val)
    name = signal.Signals(stop.received).name
    progress.line(f"charlstm: stopped by {name} at step {run.step}; saved {out_dir / LAST}. "
                  f"Resume with:\n  charlstm train --resume {shlex.quote(str(out_dir))}")
    return Outcome(out_dir, f"stopped by {name}", run.step, None, run.best_val, True)


def _validate(run, val_ids, out_dir, progress, abort=None) -> float | None:
    cfg = run.config
    loss = evaluate(run.model_params, run.model_config, val_ids, cfg.batch_size, cfg.seq_len,
                    abort)
    if loss is None:
        return None
    if run.best_val is None or loss < run.best_val:
        run.best_val, run.best_step = loss, run.step
        save_checkpoint(out_dir / BEST, run.checkpoint(loss))
    return loss


def _log(run, batches, val_loss, log, progress) -> None:
    window, run.window = run.window, LogWindow()
    n = max(window.steps, 1)
    train_loss = window.loss / n if window.steps else None
    rec = {
        "step": run.step,
        "epoch": round(batches.epoch_progress(run.cursor), 6),
        "train_loss": train_loss,
        "train_bpc": train_loss / LN2 if train_loss is not None else None,
        "val_loss": val_loss,
        "val_bpc": val_loss / LN2 if val_loss is not None else None,
        "lr": window.lr,
        "grad_norm": window.norm / n if window.steps else None,
        "chars_per_s": window.chars / window.seconds if window.seconds else None,
        "elapsed_s": round(run.elapsed, 3),
    }
    if run.config.ar or run.config.tar:  # the objective's other part, apart from the loss
        rec["train_penalty"] = window.penalty / n if window.steps else None
    try:
        log.write(json.dumps(rec) + "\n")
        log.flush()
    except OSError as e:  # a write error names no file: say it is the log
        raise OSError(e.errno, e.strerror, log.name) from None
    if train_loss is not None:
        progress.record(rec)
    elif val_loss is not None:
        progress.line(f"step {run.step} | val {val_loss:.4f} nats ({val_loss / LN2:.3f} bpc)")


def _last_saved(out_dir: Path) -> str:
    path = out_dir / LAST
    if not path.exists():
        return f"(none yet: {path} is written every --checkpoint-every steps)"
    try:
        step = load_checkpoint(path).meta.get("step")
    except UserError:
        return f"{path} (unreadable: check it with charlstm info)"
    return f"{path} (step {step})"


# ----------------------------------------------------------------------------- set-up

def load_text(config: TrainConfig) -> tuple[str, str, str]:
    """(text, sha256 of the decoded text, path) for config.data."""
    path = resolve_data(config.data)
    check_text_fits(path)
    text = read_text(path, config.encoding_errors)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest(), str(path)


def load_data(config: TrainConfig, vocab: Vocab | None = None) -> tuple[Corpus, str, str]:
    """(corpus, sha256 of the decoded text, path) for config.data; vocab: see make_corpus."""
    text, sha, path = load_text(config)
    return make_corpus(text, config.val_frac, source=path, vocab=vocab), sha, path


def with_default_stop(config: TrainConfig) -> TrainConfig:
    """No --max-steps, --epochs or --time-budget: train for DEFAULT_TIME_BUDGET minutes."""
    if config.max_steps is None and config.epochs is None and config.time_budget is None:
        return replace(config, time_budget=DEFAULT_TIME_BUDGET)
    return config


def _describe(run: Run, corpus: Corpus, batches: Batches, path: str, resumed: bool) -> str:
    cfg, mc = run.config, run.model_config
    n_params = sum(int(p.size) for p in run.params.values())
    how = f"resuming {cfg.out} at step {run.step}" if resumed else f"training into {cfg.out}"
    if cfg.init_from and not resumed:
        how += f", starting from the weights of {cfg.init_from}"
    return (f"charlstm: {how}\n"
            f"  data   {path}: {len(corpus.train):,} train / {len(corpus.val):,} val chars, "
            f"vocab {len(corpus.vocab)}, {batches.windows_per_epoch} steps per epoch "
            f"(B={cfg.batch_size} x T={cfg.seq_len})\n"
            f"  model  {mc.cell.upper()} {mc.num_layers} x {mc.hidden_size}, "
            f"{describe_dropouts(mc.to_dict())}, {n_params:,} parameters, float32\n"
            f"  optim  {cfg.optimizer} lr {cfg.lr:g} ({cfg.lr_schedule}, warmup "
            f"{cfg.warmup_steps}), clip {cfg.clip:g}{_describe_regularisation(cfg)}\n"
            f"  stop   {_describe_stop(cfg)}")


def _describe_regularisation(cfg: TrainConfig) -> str:
    parts = [f"{flag} {value:g}" for flag, value in
             (("AR", cfg.ar), ("TAR", cfg.tar), ("weight EMA", cfg.ema_decay)) if value]
    return ", " + ", ".join(parts) if parts else ""


def _describe_stop(cfg: TrainConfig) -> str:
    parts = []
    if cfg.max_steps is not None:
        parts.append(f"{cfg.max_steps} steps")
    if cfg.epochs is not None:
        parts.append(f"{cfg.epochs:g} epochs")
    if cfg.time_budget is not None:
        parts.append(f"{cfg.time_budget:g} min")
    first = ", whichever comes first" if len(parts) > 1 else ""
    return " or ".join(parts) + first + "; Ctrl-C saves and stops"


def start_training(config: TrainConfig, force: bool = False, say: Say | None = None) -> Outcome:
    """A new run in config.out (see runs.resolve_paths, with_default_stop); say as in fit."""
    config = with_default_stop(resolve_paths(config))
    init = load_init(config.init_from) if config.init_from else None
    corpus, sha, path = load_data(config, None if init is None else Vocab(init.vocab))
    batches = Batches(corpus.train, config.batch_size, config.seq_len,
                      source=f"{path} (after holding out --val-frac {config.val_frac:g})")
    check_fits(config.model_config(len(corpus.vocab)), config.optimizer, config.batch_size,
               config.seq_len, averaged=config.ema_decay > 0,
               corpus_chars=len(corpus.train) + len(corpus.val))
    out = Path(config.out)
    check_run_dir(out)  # before the lock: its .lock is not written into a user's directory
    with run_dir_lock(out):
        if prepare_run_dir(out, force) and say:
            say(f"charlstm: {out} holds a run that stopped before its first checkpoint; "
                "starting it again")
        run = new_run(config, corpus, sha, init)
        write_config(out, config)
        if say:
            say(_describe(run, corpus, batches, path, resumed=False))
        return fit(run, batches, corpus.val, out, say)


def resume_training(run_dir, overrides: dict | None = None, say: Say | None = None) -> Outcome:
    """Continue the run in run_dir from its last checkpoint, exactly; say as in fit.

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
        return _resume_locked(out, overrides or {}, say)


def _resume_locked(out: Path, overrides: dict, say: Say | None) -> Outcome:
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
    text, sha, path = load_text(config)
    if sha != ckpt.meta.get("data_sha256"):
        raise TrainingError(f"{path} is not the text this run was trained on (its checksum "
                            "differs); resume with the original --data, or fine-tune on "
                            f"this text with --init-from {shlex.quote(str(out))}",
                            exit_code=2)
    # the checkpoint's vocabulary: a fine-tuned model's may hold more than its text
    corpus = make_corpus(text, config.val_frac, source=path, vocab=Vocab(ckpt.vocab))
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
    if say:
        say(_describe(run, corpus, batches, path, resumed=True))
    return fit(run, batches, corpus.val, out, say)


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
