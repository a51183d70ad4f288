"""What the trainer tells the person training, so a budget is not wasted unseen.

A plateau notice once validation stops improving (and what helps), stopping limits
given relative to where a resumed run is (`--max-steps +2000`), the refusal that says
why a finished run stopped and the exact number to pass, and whether numba's kernels
are about to compile (a cold cache costs seconds before the first step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Evaluations without a new best before the trainer says the run has stopped improving:
# one or two are noise (a validation pass is a sample, and the lr is still high), three
# in a row on a small text is the run memorising it.
PLATEAU_EVALS = 3


@dataclass(frozen=True)
class More:
    """A stopping limit written "+N": N more than where a resumed run is now (steps,
    epochs or minutes); for a new run, which is at 0, just N."""

    amount: int | float

    def __str__(self) -> str:
        return f"+{self.amount:g}"


def plain(value):
    """A setting's value with any More read as counted from 0 (a new run)."""
    return value.amount if isinstance(value, More) else value


def resolve_more(overrides: dict, step: int, elapsed_s: float, windows_per_epoch: int) -> dict:
    """overrides with each More turned into the total it means for a run at step, after
    elapsed_s seconds of training (epochs done: step / windows_per_epoch)."""
    now = {"max_steps": step, "time_budget": elapsed_s / 60.0,
           "epochs": step / windows_per_epoch}
    resolved = {k: (now[k] + v.amount if isinstance(v, More) else v)
                for k, v in overrides.items()}
    if isinstance(overrides.get("time_budget"), More):  # to 0.06 s: a readable header
        resolved["time_budget"] = round(resolved["time_budget"], 3)
    if isinstance(overrides.get("epochs"), More):  # E more epochs: exactly E's steps more
        target = step + math.ceil(overrides["epochs"].amount * windows_per_epoch - 1e-9)
        while math.ceil(resolved["epochs"] * windows_per_epoch) > target:  # float rounding
            resolved["epochs"] = math.nextafter(resolved["epochs"], 0.0)
    return resolved


def plateau_notice(best_val: float, best_step: int, evals: int, patience: int) -> str:
    """The one line said when validation has not improved for `evals` evaluations."""
    stop = ("" if patience else
            ", or --patience N to stop a run after N evaluations without a new best")
    return (f"charlstm: no new best validation loss in {evals} evaluations (best "
            f"{best_val:.4f} at step {best_step}): the model is likely memorising the "
            "training text. What helps: the regularisers of a preset (--preset small), a "
            f"smaller model (a lower --hidden-size){stop}")


def finished_message(out, step: int, elapsed_s: float, epochs_done: float,
                     true_reason: str | None, reached: str, given: dict,
                     patience: int) -> str:
    """Why a resumed run is already finished and the exact flag that trains it further.

    true_reason: why the run stopped under its own settings (None: it had not); reached:
    the setting the resumed config has already reached; given: the stopping flags given.
    """
    at = f"at step {step} after {elapsed_s / 60:.2f} min ({epochs_done:.4g} epochs) of training"
    if reached == "patience":
        fix = f"--patience {patience + 1} or more, or --patience 0 to turn early stopping off"
    elif reached in given:
        fix = {"max_steps": f"--max-steps {step + 1} or more (or --max-steps +N: N more steps)",
               "time_budget": f"--time-budget above {_up(elapsed_s / 60)} (or --time-budget "
                              "+MIN: MIN more minutes)",
               "epochs": f"--epochs above {_up(epochs_done)} (or --epochs +E: E more "
                         "epochs)"}[reached]
        flag = "--" + reached.replace("_", "-")
        had = f"; it had stopped: {true_reason}" if true_reason else ""
        value = given[reached]
        shown = f"{value:g}" if isinstance(value, (int, float)) else value
        return (f"charlstm: {out} has already reached {flag} {shown}: it is {at}"
                f"{had}. To train further pass {fix}")
    else:
        fix = ("a new limit: --max-steps +N (N more steps), --time-budget +MIN or --epochs "
               "+E (it replaces the run's limits)")
    why = true_reason or f"no new best validation loss in {patience} evaluations"
    return f"charlstm: {out} is already finished ({why}, {at}). To train further pass {fix}"


def _up(value: float) -> str:
    """value rounded up to 2 decimals: a limit above it is really above it."""
    return f"{math.ceil(value * 100) / 100:.2f}"
