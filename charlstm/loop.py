"""The training loop: one truncated-BPTT step, and the loop around it.

Shape legend: T window length, B streams, V vocab, L layers, H hidden.

One step reads the (T, B) window at the data cursor, runs the model's pure
forward/backward with the hidden state carried from the previous window (zeros
at the start of an epoch), clips the global gradient norm, and applies one
optimizer update at the scheduled learning rate. The loop validates, logs and
checkpoints, and stops on a limit or a signal. What a step depends on is a
`run_state.Run`; starting and resuming a run is session.py's, where the files go
is runs.py's, and what is shown is the caller's (see `Say`).
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import distributed, model
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Batches
from .errors import UserError, os_error_message
from .evaluate import evaluate
from .guidance import PLATEAU_EVALS, plateau_notice
from .keepsakes import keep_checkpoint, write_sample
from .layers import LN2
from .optim import clip_grad_norm, ema_update
from .penalties import Penalty
from .progress import NEW_BEST, Progress, StopSignals
from .run_state import DTYPE, LogWindow, Run, TrainingError
from .runs import BEST, LAST, LOG
from .schedules import horizon_steps, learning_rate

# The trainer prints nothing: its progress lines and messages go to a say(text) the caller
# gives (the train command passes progress.echo), or nowhere.
Say = Callable[[str], None]


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
    loss, grads, final_state, value = distributed.loss_and_grads(
        run.comm, run.params, cfg, x, y, run.state, masks, penalty=penalty,
        weight_masks=weight_masks)
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
    best_step: int | None = None  # when best_val came


def limit_reached(run: Run, horizon: int | None, budget_s: float | None) -> str | None:
    """The stopping setting of run.config that the run has reached, if any."""
    cfg = run.config
    if cfg.max_steps is not None and run.step >= cfg.max_steps:
        return "max_steps"
    if horizon is not None and run.step >= horizon:
        return "epochs"
    if budget_s is not None and run.elapsed >= budget_s:
        return "time_budget"
    if cfg.patience and run.evals_since_best >= cfg.patience:
        return "patience"
    return None


def _stop_reason(run: Run, horizon: int | None, budget_s: float | None) -> str | None:
    cfg, key = run.config, limit_reached(run, horizon, budget_s)
    if key is None:
        return None
    if key == "patience":
        return f"no new best validation loss in {cfg.patience} evaluations"
    unit = " min" if key == "time_budget" else ""
    return f"reached --{key.replace('_', '-')} {getattr(cfg, key):g}{unit}"


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
    progress = Progress(horizon, run.step, say, budget_s=budget_s, elapsed=run.elapsed)
    start, elapsed0 = time.perf_counter(), run.elapsed
    val_loss, reason = None, None
    lead = run.comm.rank == 0  # across ranks, rank 0 alone writes files
    with (open(out_dir / LOG, "a", encoding="utf-8") if lead else nullcontext()) as log, \
            StopSignals(progress) as stop:
        if run.pending_eval:  # the validation pass a signal cut short, as if never cut
            run.pending_eval = False
            val_loss = _validate(run, val_ids, out_dir, progress)
            _log(run, batches, val_loss, log, progress)
            _judge(run, progress)
        # stop() first: a signal during the last step is an interruption, not the end
        while not _agree(run, stop()) and not (reason := _stop_reason(run, horizon, budget_s)):
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
            _agree(run, False, elapsed0 + (now - start))
            run.window.add(loss, norm, batches.batch_size * batches.seq_len, now - t0, lr,
                           penalty)
            progress.update(run.elapsed)
            # the last step always gets a validation pass and a log record
            last = _stop_reason(run, horizon, budget_s) is not None
            val_loss = None
            if len(val_ids) and (last or cfg.eval_every and run.step % cfg.eval_every == 0):
                # ranks cannot cut a pass short together: across ranks it runs whole
                val_loss = _validate(run, val_ids, out_dir, progress,
                                     abort=stop if run.comm.size == 1 else None)
                if val_loss is None:  # cut short by a signal: redone first on resume
                    run.pending_eval = True
                    continue
            if last or run.step % cfg.log_every == 0 or val_loss is not None:
                _log(run, batches, val_loss, log, progress)
            if val_loss is not None:
                _judge(run, progress)  # after the line it is about
            if cfg.sample_every and run.step % cfg.sample_every == 0:
                write_sample(run, out_dir, progress.line)
            if not last and run.step % cfg.checkpoint_every == 0:
                _save(run, out_dir / LAST, val_loss)
        _save(run, out_dir / LAST, val_loss)
    progress.close()
    if reason is not None:
        return Outcome(out_dir, reason, run.step, val_loss, run.best_val,
                       best_step=run.best_step)
    name = signal.Signals(stop.received).name if stop.received else "another rank's signal"
    again = "charlstm train" if run.comm.size == 1 else \
        f"mpiexec -n {run.comm.size} charlstm train --distributed mpi"
    progress.line(f"charlstm: stopped by {name} at step {run.step}; saved {out_dir / LAST}. "
                  f"Resume with:\n  {again} --resume {shlex.quote(str(out_dir))}")
    return Outcome(out_dir, f"stopped by {name}", run.step, None, run.best_val, True,
                   run.best_step)


def _validate(run, val_ids, out_dir, progress, abort=None) -> float | None:
    cfg = run.config
    loss = evaluate(run.model_params, run.model_config, val_ids, cfg.batch_size, cfg.seq_len,
                    abort)
    if loss is None:
        return None
    # across ranks, one figure (machines whose maths differ in the last bit must still
    # take the same decision below)
    _, loss = run.comm.agree(False, loss)
    if run.best_val is None or loss < run.best_val:
        run.best_val, run.best_step = loss, run.step
        _save(run, out_dir / BEST, loss)
    if cfg.keep:
        keep_checkpoint(run, out_dir, loss)
    return loss


def _judge(run: Run, progress: Progress) -> None:
    """After a validation pass: count the evaluations since the best (--patience reads
    the count), and say once per run when they reach PLATEAU_EVALS, unless --patience
    is about to stop the run anyway (the summary then says why)."""
    if run.best_step == run.step:  # this pass set a new best
        run.evals_since_best = 0
        return
    run.evals_since_best += 1
    patience = run.config.patience
    if (run.evals_since_best >= PLATEAU_EVALS and not run.plateau_noted
            and not (patience and run.evals_since_best >= patience)):
        run.plateau_noted = True
        progress.line(plateau_notice(run.best_val, run.best_step, run.evals_since_best,
                                     patience))


def _agree(run: Run, stop: bool, elapsed: float | None = None) -> bool:
    """Set run.elapsed (when given) and return stop; across ranks, every rank gets any
    rank's stop and the slowest clock, so all take the same decisions at the same step."""
    seconds = run.elapsed if elapsed is None else elapsed
    stop, run.elapsed = run.comm.agree(stop, seconds)
    return stop


def _save(run: Run, path: Path, val_loss: float | None) -> None:
    """Rank 0 writes the checkpoint, once every rank has checked that all hold the same
    weights (one float each: they apply the same sums, so they always should)."""
    if run.comm.size > 1:
        distributed.assert_same(run.comm, run.params)
    if run.comm.rank == 0:
        save_checkpoint(path, run.checkpoint(val_loss))


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
        if log is not None:  # None on ranks other than 0
            log.write(json.dumps(rec) + "\n")
            log.flush()
    except OSError as e:  # a write error names no file: say it is the log
        raise OSError(e.errno, e.strerror, log.name) from None
    best = val_loss is not None and run.best_step == run.step  # this pass set a new best
    if train_loss is not None:
        progress.record(rec, best)
    elif val_loss is not None:
        progress.line(f"step {run.step} | val {val_loss:.4f} nats ({val_loss / LN2:.3f} bpc"
                      f"{NEW_BEST if best else ''})")


def _last_saved(out_dir: Path) -> str:
    path = out_dir / LAST
    if not path.exists():
        return f"(none yet: {path} is written every --checkpoint-every steps)"
    try:
        step = load_checkpoint(path).meta.get("step")
    except UserError:
        return f"{path} (unreadable: check it with charlstm info)"
    return f"{path} (step {step})"
