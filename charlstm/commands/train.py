"""`charlstm train`: train a model on a text file, or resume a run exactly.

Settings resolve as TrainConfig defaults <- --preset NAME <- --config FILE.toml <-
flags given on the command line. Every flag defaults to "not given"
(argparse.SUPPRESS), so the namespace holds exactly what the user typed and nothing
shadows the file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..cells import CELLS
from ..cluster import follow, lead
from ..config import ENCODING_ERRORS, UNKNOWN, TrainConfig, load_toml, name_flag
from ..distributed import communicator, rank_streams
from ..errors import UserError
from ..guidance import plain
from ..library import resolve_config, say_start, summary
from ..optim import OPTIMIZERS
from ..presets import PRESETS, load_preset
from ..progress import echo
from ..runs import BEST, LAST
from ..schedules import SCHEDULES, describe
from ..session import DEFAULT_TIME_BUDGET, OnStart, resume_training, start_training
from .argtypes import relative, unchecked

DEFAULTS = TrainConfig()
KEYS = [f.name for f in fields(TrainConfig)]


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
    _add(r, "init_from", "fine-tune: start from the weights of a trained model (its shape, "
         "vocabulary and dropout rates; fresh optimizer, schedule, weight decay and EMA) "
         "instead of a random init", metavar="RUN_DIR|CHECKPOINT")
    _add(r, "unknown", "with --init-from: characters of the text the model lacks are an "
         "error, or skip = left out (counted in the header)", choices=UNKNOWN)
    _add(r, "extend_vocab", "with --init-from: give characters of the text the model lacks "
         "new rows (initialised as a new model's); the old ones keep their weights",
         action="store_true")
    r.add_argument("--distributed", choices=["none", "mpi"], default="none",
                   help="mpi: one run across the processes `mpiexec -n N` starts, each "
                   "training a slice of the B streams (same results as one process; "
                   "rank 0 writes the files); needs the mpi extra (docs/distributed.md)")
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
    _add(d, "data", "UTF-8 text: a file; tinyshakespeare (found in $CHARLSTM_DATA_DIR, "
         "~/.cache/charlstm, or downloaded); a directory (its input.txt, else every file not "
         "starting with '.', by name; or one made by charlstm prepare: its ids read from "
         "disk); several of these, joined in order; or - for standard "
         "input (the run keeps a copy, stdin.txt)", metavar="PATH|NAME", nargs="+")
    _add(d, "seq_len", "T: characters per BPTT window", type=unchecked(int), metavar="T")
    _add(d, "batch_size", "B: parallel streams per step", type=unchecked(int), metavar="B")
    _add(d, "val_frac", "last fraction of the text held out for validation",
         type=unchecked(float), metavar="F")
    _add(d, "test_frac", "last fraction of the text held out as a test split, after "
         "validation: never trained on; scored by charlstm eval RUN_DIR --split test",
         type=unchecked(float), metavar="F")
    _add(d, "encoding_errors", "invalid UTF-8: strict = error, replace = U+FFFD",
         choices=ENCODING_ERRORS)
    s = p.add_argument_group(
        "stopping", f"the first limit reached stops; with none, --time-budget "
        f"{DEFAULT_TIME_BUDGET:g}. With --resume, +N means N more than the run has done "
        "(--max-steps +2000, --time-budget +10)")
    _add(s, "max_steps", "total optimizer steps", type=relative(int), metavar="N")
    _add(s, "epochs", "passes over the training text", type=relative(float), metavar="E")
    _add(s, "time_budget", "minutes of training", type=relative(float), metavar="MIN")
    _add(s, "patience", "stop after N validation passes without a new best validation "
         "loss (early stopping; 0 = off)", type=unchecked(int), metavar="N")
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
    _add(w, "sample_every", "steps between short samples (200 characters at temperature "
         "0.8), printed and appended to RUN_DIR/samples.txt (0 = off)", type=unchecked(int),
         metavar="N")
    _add(w, "keep", "keep the last N evaluated checkpoints besides last and best, as "
         "step-002500-val1.6994.safetensors (0 = none)", type=unchecked(int), metavar="N")
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
    comm = communicator(args.distributed)
    if comm.rank > 0:  # rank 0 prints and writes; the others train silently
        outcome = follow(comm)
        return 130 if outcome is not None and outcome.interrupted else 0

    def begin(on_start: OnStart):
        return _begin(args, comm.size, on_start)

    outcome = lead(comm, begin, _say_start) if comm.size > 1 else begin(_say_start)
    if outcome.interrupted:
        return 130
    print(summary(outcome), flush=True)
    return 0


def _begin(args, ranks: int, on_start: OnStart):
    """Start or resume the run the flags describe (on rank 0, across ranks)."""
    given = {k: getattr(args, k) for k in KEYS if hasattr(args, k)}
    if "data" in given:  # --data A [B ...]: one text is a string, several a tuple
        given["data"] = given["data"][0] if len(given["data"]) == 1 else tuple(given["data"])
    if args.resume is not None:
        if args.config is not None or args.preset is not None or args.force:
            raise UserError("--resume takes the run's own settings: drop "
                            "--config/--preset/--force")
        if "out" in given:
            raise UserError("--resume RUN_DIR names the run; drop --out")
        if "init_from" in given:
            raise UserError("--resume continues a run, --init-from starts a new one from "
                            "its weights: give one of them")
        return resume_training(args.resume, given, say=echo, on_start=on_start)
    else:
        settings = load_preset(args.preset) if args.preset is not None else {}
        if args.config is not None:
            try:
                settings.update(load_toml(args.config))
            except ValueError as e:
                raise UserError(str(e)) from None
        settings.update({k: plain(v) for k, v in given.items()})  # a new run is at 0
        if "out" not in given:
            check_config_out(settings.get("out"), args.config, args.force)
        try:
            config = resolve_config(settings)
        except (ValueError, TypeError) as e:
            message = name_flag(str(e), given)
            where = f" (in {args.config})" if args.config and message == str(e) else ""
            raise UserError(f"{message}{where}") from None
        if config.dropout > 0 and config.num_layers == 1:
            print(f"charlstm: warning: --dropout {config.dropout:g} does nothing with one "
                  "layer (it acts between layers, as in torch.nn.LSTM); add --num-layers 2 "
                  "or more to use it, or --locked-dropout, which acts on every layer's "
                  "output", file=sys.stderr)
        rank_streams(config.batch_size, ranks)  # before a run directory is made
        return start_training(config, force=args.force, say=echo, on_start=on_start)


def _say_start(start) -> None:
    """The run's header (library.say_start), and across MPI ranks how they split."""
    say_start(start)
    run = start.run
    if run.comm.size > 1:
        B = run.config.batch_size
        widths = sorted({s.stop - s.start for s in rank_streams(B, run.comm.size)})
        echo(f"  ranks  {run.comm.size} processes (MPI), {' or '.join(map(str, widths))} "
             "streams each; rank 0 writes the files")
