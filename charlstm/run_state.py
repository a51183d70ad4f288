"""What a training run is at any step, and what its checkpoint holds.

Shape legend: T window length, B streams, V vocab, L layers, H hidden.

Everything a training step reads or changes is in a `Run`: parameters, optimizer
slots and step count, data cursor, carried state, the dropout generator, best
validation loss, elapsed time. `Run.checkpoint` stores all of it (arrays as tensors,
the rest as JSON meta) and `run_from_checkpoint` rebuilds it, so a resumed run
continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

import numpy as np

from . import model
from ._version import __version__
from .checkpoint import Checkpoint
from .config import ModelConfig, TrainConfig
from .data import Corpus, Cursor
from .distributed import LOCAL, Communicator
from .errors import UserError
from .finetune import extend_params
from .network import CharLSTM
from .optim import Optimizer, make_optimizer
from .text import Vocab

DTYPE = np.float32
# With --ema-decay, a checkpoint's model tensors are the averaged weights (what every
# reader of a checkpoint uses) and the raw training weights are kept beside the optimizer
# slots under this prefix, for an exact resume.
RAW = "train.raw."
# Settings a resumed run may change: they decide when to stop and what to write, not what
# any step computes (a new stopping point does move a cosine schedule's horizon).


class TrainingError(UserError):
    """Training cannot go on, in one line: exit 1 when it failed (diverged, the disk
    filled), 2 when what it was given cannot be resumed (other data, a model-only file)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message, exit_code=exit_code)


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
    evals_since_best: int = 0  # validation passes since the best one (--patience)
    plateau_noted: bool = False  # the plateau notice was given (it is given once a run)
    # the ranks this run is split across (distributed.py); not checkpointed: a run may
    # resume on another number of ranks
    comm: Communicator = field(default=LOCAL, compare=False, repr=False)

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
            "evals_since_best": self.evals_since_best,
            "plateau_noted": self.plateau_noted,
            "data_sha256": self.data_sha256,
            "package_version": __version__,
        }
        return Checkpoint(self.model_config, list(self.vocab.chars), self.model_params,
                          arrays, meta)


def new_run(config: TrainConfig, corpus: Corpus, data_sha256: str,
            init: Checkpoint | None = None) -> Run:
    """Step 0 of a run: fresh weights from config.seed, or init's weights (fine-tuning:
    same shape, and init's vocabulary or, with --extend-vocab, one that begins with it:
    the caller checks); fresh optimizer and schedule."""
    model_config = config.model_config(len(corpus.vocab))
    params = None if init is None else {k: v.astype(DTYPE) for k, v in init.params.items()}
    if init is not None and len(corpus.vocab) > len(init.vocab):
        params = extend_params(params, model_config, config.seed, DTYPE)
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
                   pending_eval=bool(meta.get("pending_eval", False)), average=average,
                   evals_since_best=int(meta.get("evals_since_best", 0)),
                   plateau_noted=bool(meta.get("plateau_noted", False)))
    except KeyError as e:
        raise TrainingError(f"{path} cannot be resumed: it lacks the training state "
                            f"{e.args[0]!r} (a model-only checkpoint?); a new run can start "
                            f"from its weights with --init-from {shlex.quote(str(path))}",
                            exit_code=2) from None
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{path} cannot be resumed (not a training checkpoint, or "
                            f"incomplete: {e})") from None
