"""`charlstm.train(...)`: train (or resume) a run from Python, as `charlstm train` does.

    >>> model = charlstm.train(data="input.txt", preset="small", time_budget=3)
    >>> print(model.generate("ROMEO:", length=200, stop="\\n\\n"))

The keyword arguments are TrainConfig's fields (the CLI's flags, with _ for -), resolved
as the CLI resolves them (defaults <- preset <- arguments, a fine-tune's shape from its
model), and the run goes through the same session.start_training / resume_training into
the same run directory. The words a run prints (its header and summary) live here, so
that `progress=True` and `charlstm train` print the same text.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from . import fast
from .cells import get_cell
from .config import TrainConfig, describe_dropouts
from .finetune import describe_inherited, init_settings, load_init
from .language_model import LanguageModel, load
from .layers import LN2
from .loop import Outcome
from .optim import get_optimizer
from .presets import load_preset
from .progress import echo
from .runs import BEST, LAST
from .schedules import get_schedule
from .session import Start, resume_training, start_training

# The registry names a TrainConfig holds but does not check (config imports no registry),
# looked up as the run will look them up, so that a bad one is refused before a run
# directory is written.
LOOKUPS = {"cell": get_cell, "optimizer": get_optimizer, "lr_schedule": get_schedule}


def resolve_config(settings: dict) -> TrainConfig:
    """The TrainConfig of settings (preset and --config already merged in), with a
    fine-tune's shape and dropouts taken from its --init-from model; ValueError or
    TypeError for a bad value or an unknown key, UserError for a shape that differs
    from the --init-from model's."""
    if settings.get("init_from"):
        settings = init_settings(settings, load_init(settings["init_from"]))
    config = TrainConfig.from_dict(settings)
    for key, lookup in LOOKUPS.items():
        lookup(getattr(config, key))
    return config


def train(*, preset: str | None = None, resume=None, force: bool = False,
          progress: bool = False, **settings) -> LanguageModel:
    """Train a model and return it loaded (the run's best checkpoint, else its last).

    settings: TrainConfig fields (`data="input.txt"`, `hidden_size=256`,
    `time_budget=3`, `init_from="runs/x"`, ...), over `preset`'s recipe ("small",
    "medium", "large") as `charlstm train --preset NAME --FLAG VALUE` resolves them;
    the run directory is `out=` (default runs/<data>-<date>-<time>), written as by the
    CLI and readable by every command. force: replace the run files of an `out` that
    already holds a run. resume: a run directory to continue exactly; settings may
    then only change stopping and logging (as `--resume`). progress: print the CLI's
    header, progress lines and summary (default: silent).

    A bad setting is a ValueError (or TypeError) naming it; Ctrl-C saves the run and
    raises KeyboardInterrupt, whose message says how to resume it.
    """
    say = echo if progress else None
    on_start = say_start if progress else None
    if resume is not None:
        if preset is not None or force:
            raise ValueError("resume= takes the run's own settings: drop preset=/force=")
        for key in ("out", "init_from"):
            if key in settings:
                raise ValueError(f"resume= names the run and continues it: drop {key}=")
        outcome = resume_training(resume, settings, say=say, on_start=on_start)
    else:
        merged = {**(load_preset(preset) if preset is not None else {}), **settings}
        outcome = start_training(resolve_config(merged), force=force, say=say,
                                 on_start=on_start)
    if outcome.interrupted:
        raise KeyboardInterrupt(f"training stopped at step {outcome.step} and was saved; "
                                f"continue with charlstm.train(resume={str(outcome.out_dir)!r})")
    if progress:
        echo(summary(outcome))
    return load(outcome.out_dir)


def summary(outcome: Outcome) -> str:
    """The lines a finished run ends with: where it stopped, its losses, what next."""
    text = f"charlstm: done at step {outcome.step}: {outcome.reason}"
    if outcome.val_loss is not None:
        text += (f"; val loss {outcome.val_loss:.4f} nats/char "
                 f"({outcome.val_loss / LN2:.3f} bpc)")
    text += describe_best(outcome)
    run_dir = shlex.quote(str(outcome.out_dir))
    files = ", ".join(n for n in (LAST, BEST) if (Path(outcome.out_dir) / n).exists())
    return (f"{text}\n  checkpoints in {run_dir}/ ({files})\n  next: charlstm sample "
            f"{run_dir} --prime TEXT  |  charlstm eval {run_dir}  |  charlstm plot {run_dir}")


def say_start(start: Start) -> None:
    """The header a run prints before its first step: data, model, optimiser, stop."""
    run, corpus, batches, path, resumed, added = start
    cfg, mc = run.config, run.model_config
    n_params = sum(int(p.size) for p in run.params.values())
    how = f"resuming {cfg.out} at step {run.step}" if resumed else f"training into {cfg.out}"
    init = ""
    if cfg.init_from and not resumed:
        how += f", starting from the weights of {cfg.init_from}"
        init = f"  init   {describe_inherited(mc, added, corpus.skipped)}\n"
    test = f" / {len(corpus.test):,} test" if len(corpus.test) else ""
    echo(f"charlstm: {how}\n{init}"
         f"  data   {path}: {len(corpus.train):,} train / {len(corpus.val):,} val{test} chars"
         f"{describe_eval_subset(cfg, corpus)}, "
         f"vocab {len(corpus.vocab)}, {batches.windows_per_epoch} steps per epoch "
         f"(B={cfg.batch_size} x T={cfg.seq_len})\n"
         f"  model  {mc.cell.upper()} {mc.num_layers} x {mc.hidden_size}, "
         f"{describe_dropouts(mc.to_dict())}, {n_params:,} parameters, float32\n"
         f"  optim  {cfg.optimizer} lr {cfg.lr:g} ({cfg.lr_schedule}, warmup "
         f"{cfg.warmup_steps}), clip {cfg.clip:g}{describe_regularisation(cfg)}\n"
         f"  stop   {describe_stop(cfg)}")
    if fast.compile_pending():
        counted = ", counted in --time-budget" if cfg.time_budget else ""
        echo("charlstm: compiling the fast kernels before the first step (once: later runs "
             f"reuse them; about 10-30 s{counted})...")


def describe_eval_subset(cfg: TrainConfig, corpus) -> str:
    """" (validating on the first N)" when --eval-chars cuts the validation split."""
    if cfg.eval_chars and len(corpus.val) > cfg.eval_chars:
        return f" (validating on the first {cfg.eval_chars:,}, see --eval-chars)"
    return ""


def describe_best(outcome: Outcome) -> str:
    """', best 1.6994 at step 2500 (the last is 0.1171 above it)', or ''."""
    if outcome.best_val is None:
        return ""
    text = f", best {outcome.best_val:.4f}"
    if outcome.best_step is not None:
        text += f" at step {outcome.best_step}"
    if outcome.val_loss is not None and outcome.val_loss > outcome.best_val:
        text += f" (the last is {outcome.val_loss - outcome.best_val:.4f} above it)"
    return text


def describe_regularisation(cfg: TrainConfig) -> str:
    """", AR 1, TAR 2, weight EMA 0.999" for the regularisers that are set, else ""."""
    parts = [f"{flag} {value:g}" for flag, value in
             (("AR", cfg.ar), ("TAR", cfg.tar), ("weight EMA", cfg.ema_decay)) if value]
    return ", " + ", ".join(parts) if parts else ""


def describe_stop(cfg: TrainConfig) -> str:
    """The run's stopping limits in words, and how to stop it early."""
    parts = []
    if cfg.max_steps is not None:
        parts.append(f"{cfg.max_steps} steps")
    if cfg.epochs is not None:
        parts.append(f"{cfg.epochs:g} epochs")
    if cfg.time_budget is not None:
        parts.append(f"{cfg.time_budget:g} min")
    if cfg.patience:
        parts.append(f"{cfg.patience} evaluations without a new best")
    first = ", whichever comes first" if len(parts) > 1 else ""
    return " or ".join(parts) + first + "; Ctrl-C saves and stops"
