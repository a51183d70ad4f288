"""`charlstm train`: train a model on a text file, or resume a run exactly.

Settings resolve as TrainConfig defaults <- --preset NAME <- --config FILE.toml <-
flags given on the command line. Every flag defaults to "not given"
(argparse.SUPPRESS), so the namespace holds exactly what the user typed and nothing
shadows the file.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from ..cells import CELLS, get_cell
from ..config import ENCODING_ERRORS, TrainConfig, describe_dropouts, load_toml, name_flag
from ..errors import UserError
from ..finetune import init_settings, load_init
from ..layers import LN2
from ..optim import OPTIMIZERS, get_optimizer
from ..presets import PRESETS, load_preset
from ..progress import echo
from ..runs import BEST, LAST
from ..schedules import SCHEDULES, describe, get_schedule
from ..session import DEFAULT_TIME_BUDGET, Start, resume_training, start_training
from .argtypes import unchecked

DEFAULTS = TrainConfig()
KEYS = [f.name for f in fields(TrainConfig)]
# The registry names a TrainConfig holds but does not check (config imports no registry),
# looked up here as the run will look them up, so that a bad one in a --config file or a
# preset is one line before a run directory is written (flags are argparse choices).
LOOKUPS = {"cell": get_cell, "optimizer": get_optimizer, "lr_schedule": get_schedule}


def _add(group, key: str, help: str, **kwargs) -> None:
    default = getattr(DEFAULTS, key)
    shown = f" (default {default})" if default not in (None, "") else ""
    group.add_argument("--" + key.replace("_", "-"), dest=key, default=argparse.SUPPRESS,
                       help=help + shown, **kwargs)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a text file (or resume a run)",
        description="Train a character-level model with truncated BPTT. Writes RUN_DIR/"
        "config.toml, log.jsonl (one JSON record per logged step), last.safetensors and "
        "best.safetensors. Ctrl-C, SIGTERM or SIGHUP saves a checkpoint and prints the command "
        "that resumes; --resume continues bit-identically.")
    r = p.add_argument_group("run")
    r.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="start from a recipe tuned on Tiny Shakespeare for a time budget: "
                   + "; ".join(f"{k} = {v}" for k, v in PRESETS.items())
                   + " (charlstm/presets/*.toml); --config and flags override it")
    r.add_argument("--config", metavar="FILE.toml", default=None,
                   help="read settings from a TOML file (key = value, names as the flags "
                   "with _ for -); flags override it")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR exactly where it stopped; only stopping "
                   "and logging flags (and --data, for a moved file) may be given")
    _add(r, "init_from", "fine-tune: start from the weights of a trained model (its shape "
         "and vocabulary; fresh optimizer and schedule) instead of a random init",
         metavar="RUN_DIR|CHECKPOINT")
    r.add_argument("--force", action="store_true",
                   help="replace the run files in an --out that already holds a run "
                   "(other files there are left alone)")
    m = p.add_argument_group("model")
    _add(m, "hidden_size", "H: width of each layer's state", type=unchecked(int), metavar="H")
    _add(m, "num_layers", "L: stacked recurrent layers", type=unchecked(int), metavar="L")
    _add(m, "dropout", "dropout between layers, in [0, 1)", type=unchecked(float), metavar="P")
    _add(m, "forget_bias", "init bias on the LSTM forget gate (GRU: update gate z)",
         type=unchecked(float), metavar="B")
    _add(m, "cell", "recurrent cell", choices=list(CELLS))
    o = p.add_argument_group("optimisation")
    _add(o, "optimizer", "update rule", choices=list(OPTIMIZERS))
    _add(o, "lr", "peak learning rate", type=unchecked(float), metavar="LR")
    _add(o, "momentum", "momentum (sgd only)", type=unchecked(float), metavar="M")
    _add(o, "weight_decay", "decoupled weight decay on matrices", type=unchecked(float),
         metavar="WD")
    _add(o, "clip", "clip the global gradient norm to this (0 = off)", type=unchecked(float),
         metavar="NORM")
    _add(o, "lr_schedule", f"learning-rate schedule after the warmup ({describe()})",
         choices=list(SCHEDULES))
    _add(o, "warmup_steps", "steps of linear warmup from 0", type=unchecked(int), metavar="N")
    _add(o, "lr_decay", "step schedule: multiply lr by this", type=unchecked(float),
         metavar="F")
    _add(o, "lr_decay_every", "step schedule: steps between decays", type=unchecked(int),
         metavar="N")
    _add(o, "min_lr_ratio", "cosine schedule: final lr as a fraction of --lr",
         type=unchecked(float), metavar="R")
    g = p.add_argument_group(
        "regularisation", "AWD-LSTM's, for small texts a model overfits. Each dropout "
        "draws one mask per window and acts only in training; the penalties on the top "
        "layer's output are added to the objective (the logged loss stays the "
        "cross-entropy); the weights' moving average is the model that validation, "
        "checkpoints and every command read")
    _add(g, "weight_dropout", "DropConnect on every layer's recurrent weights W_hh, in "
         "[0, 1)", type=unchecked(float), metavar="P")
    _add(g, "locked_dropout", "variational dropout on every layer's output (the top one's "
         "too): one mask per stream shared by all steps, in [0, 1)", type=unchecked(float),
         metavar="P")
    _add(g, "input_dropout", "drop each character type from the input for the whole "
         "window, in [0, 1)", type=unchecked(float), metavar="P")
    _add(g, "ar", "activation regularisation: weight of mean(h^2) (0 = off)",
         type=unchecked(float), metavar="ALPHA")
    _add(g, "tar", "temporal activation regularisation: weight of mean((h[t] - h[t-1])^2) "
         "(0 = off)", type=unchecked(float), metavar="BETA")
    _add(g, "ema_decay", "validate, save, sample and export an exponential moving average "
         "of the weights with this decay, in [0, 1), e.g. 0.999 (0 = off)",
         type=unchecked(float), metavar="D")
    d = p.add_argument_group("data")
    _add(d, "data", "a UTF-8 text file, a directory made by charlstm prepare, or "
         "tinyshakespeare (found in $CHARLSTM_DATA_DIR, ~/.cache/charlstm, or downloaded)",
         metavar="PATH|NAME")
    _add(d, "seq_len", "T: characters per BPTT window", type=unchecked(int), metavar="T")
    _add(d, "batch_size", "B: parallel streams per step", type=unchecked(int), metavar="B")
    _add(d, "val_frac", "last fraction of the text held out for validation",
         type=unchecked(float), metavar="F")
    _add(d, "encoding_errors", "invalid UTF-8: strict = error, replace = U+FFFD",
         choices=ENCODING_ERRORS)
    s = p.add_argument_group(
        "stopping", f"the first limit reached stops; with none, --time-budget "
        f"{DEFAULT_TIME_BUDGET:g}")
    _add(s, "max_steps", "total optimizer steps", type=unchecked(int), metavar="N")
    _add(s, "epochs", "passes over the training text", type=unchecked(float), metavar="E")
    _add(s, "time_budget", "minutes of training", type=unchecked(float), metavar="MIN")
    w = p.add_argument_group("output")
    _add(w, "out", "run directory (default runs/<data>-<date>-<time>)", metavar="RUN_DIR")
    _add(w, "eval_every", "steps between validation passes (0 = only at the end)",
         type=unchecked(int), metavar="N")
    _add(w, "eval_chars", "characters of the validation split each validation pass "
         "scores: the first N, the same every pass (0 = the whole split; charlstm eval "
         "scores it whole)", type=unchecked(int), metavar="N")
    _add(w, "log_every", "steps between progress lines / log records", type=unchecked(int),
         metavar="N")
    _add(w, "checkpoint_every", "steps between last.safetensors saves", type=unchecked(int),
         metavar="N")
    _add(w, "seed", "seed of the initialisation and dropout", type=unchecked(int),
         metavar="S")
    p.set_defaults(run=run)


def check_config_out(out, config_file, force: bool) -> None:
    """A run's own config.toml names the run as its out: using it for a new run without
    --out must not read as "this directory already holds a run, resume it"."""
    if out and not force and any((Path(out) / name).exists() for name in (LAST, BEST)):
        raise UserError(f"{out} (the out of {config_file}) already holds a run; pass --out "
                        "NEW_RUN_DIR to start a new run with these settings")


def run(args) -> int:
    given = {k: getattr(args, k) for k in KEYS if hasattr(args, k)}
    if args.resume is not None:
        if args.config is not None or args.preset is not None or args.force:
            raise UserError("--resume takes the run's own settings: drop "
                            "--config/--preset/--force")
        if "out" in given:
            raise UserError("--resume RUN_DIR names the run; drop --out")
        if "init_from" in given:
            raise UserError("--resume continues a run, --init-from starts a new one from "
                            "its weights: give one of them")
        outcome = resume_training(args.resume, given, say=echo, on_start=_say_start)
    else:
        settings = load_preset(args.preset) if args.preset is not None else {}
        if args.config is not None:
            try:
                settings.update(load_toml(args.config))
            except ValueError as e:
                raise UserError(str(e)) from None
        settings.update(given)
        if "out" not in given:
            check_config_out(settings.get("out"), args.config, args.force)
        if settings.get("init_from"):
            settings = init_settings(settings, load_init(settings["init_from"]))
        try:
            config = TrainConfig.from_dict(settings)
            for key, lookup in LOOKUPS.items():
                lookup(getattr(config, key))
        except (ValueError, TypeError) as e:
            message = name_flag(str(e), given)
            where = f" (in {args.config})" if args.config and message == str(e) else ""
            raise UserError(f"{message}{where}") from None
        if config.dropout > 0 and config.num_layers == 1:
            print(f"charlstm: warning: --dropout {config.dropout:g} does nothing with one "
                  "layer (it acts between layers, as in torch.nn.LSTM); add --num-layers 2 "
                  "or more to use it, or --locked-dropout, which acts on every layer's "
                  "output", file=sys.stderr)
        outcome = start_training(config, force=args.force, say=echo,
                                 on_start=_say_start)
    if outcome.interrupted:
        return 130
    summary = f"charlstm: done at step {outcome.step}: {outcome.reason}"
    if outcome.val_loss is not None:
        summary += (f"; val loss {outcome.val_loss:.4f} nats/char "
                    f"({outcome.val_loss / LN2:.3f} bpc)")
    if outcome.best_val is not None:
        summary += f", best {outcome.best_val:.4f}"
    run_dir = shlex.quote(str(outcome.out_dir))
    files = ", ".join(n for n in (LAST, BEST) if (outcome.out_dir / n).exists())
    print(f"{summary}\n  checkpoints in {run_dir}/ ({files})\n  next: charlstm sample "
          f"{run_dir} --prime TEXT  |  charlstm eval {run_dir}  |  charlstm plot {run_dir}",
          flush=True)
    return 0


def _say_start(start: Start) -> None:
    """The header a run prints before its first step: data, model, optimiser, stop."""
    run, corpus, batches, path, resumed = start
    cfg, mc = run.config, run.model_config
    n_params = sum(int(p.size) for p in run.params.values())
    how = f"resuming {cfg.out} at step {run.step}" if resumed else f"training into {cfg.out}"
    if cfg.init_from and not resumed:
        how += f", starting from the weights of {cfg.init_from}"
    echo(f"charlstm: {how}\n"
         f"  data   {path}: {len(corpus.train):,} train / {len(corpus.val):,} val chars"
         f"{_describe_eval_subset(cfg, corpus)}, "
         f"vocab {len(corpus.vocab)}, {batches.windows_per_epoch} steps per epoch "
         f"(B={cfg.batch_size} x T={cfg.seq_len})\n"
         f"  model  {mc.cell.upper()} {mc.num_layers} x {mc.hidden_size}, "
         f"{describe_dropouts(mc.to_dict())}, {n_params:,} parameters, float32\n"
         f"  optim  {cfg.optimizer} lr {cfg.lr:g} ({cfg.lr_schedule}, warmup "
         f"{cfg.warmup_steps}), clip {cfg.clip:g}{_describe_regularisation(cfg)}\n"
         f"  stop   {_describe_stop(cfg)}")


def _describe_eval_subset(cfg: TrainConfig, corpus) -> str:
    """" (validating on the first N)" when --eval-chars cuts the validation split."""
    if cfg.eval_chars and len(corpus.val) > cfg.eval_chars:
        return f" (validating on the first {cfg.eval_chars:,}, see --eval-chars)"
    return ""


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
