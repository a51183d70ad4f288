"""Typed, frozen configuration for the model.

Every checkpoint stores the whole config, so a model can always be rebuilt
from its file alone. CLI defaults are read from these dataclasses.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import closest

FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
# forget_bias is added to the initial biases: beyond this a sigmoid is saturated at 0 or 1
# in float32 anyway, and checkpoints bound every weight (checkpoint.MAX_WEIGHT, 1e4).
MAX_FORGET_BIAS = 100.0
# The dropout rates, each in [0, 1): training-only settings, free to change on fine-tuning.
DROPOUTS = ("dropout", "weight_dropout", "locked_dropout", "input_dropout")


@dataclass(frozen=True)
class ModelConfig:
    # Number of distinct characters; the one-hot input width and the softmax width.
    vocab_size: int
    # Width of each recurrent layer's state; cost grows as H^2 per character. One wide
    # layer: on a CPU, wider beats deeper per second of training (one big GEMM); 384
    # rather than 512 buys 1.6x the steps in the demo's 5 minutes. (The CLI's default.)
    hidden_size: int = 384
    # Stacked recurrent layers; more model more structure (char-rnn found 2-3 best per
    # parameter) but each halves the speed, so the default is one.
    num_layers: int = 1
    # Inverted-dropout rate on the outputs of every layer but the last (as torch.nn.LSTM).
    dropout: float = 0.0
    # AWD-LSTM's regularisers (Merity et al. 2017), training only: they never change
    # evaluation, sampling or export, so a model trained with them runs as without.
    # DropConnect rate on every W_hh: one mask per window regularises the recurrence
    # itself without touching the fast per-step kernel (AWD-LSTM used 0.5 on words).
    weight_dropout: float = 0.0
    # Locked (variational) dropout on every layer's output, the top one's included: one
    # mask per stream per window, shared by all steps (Gal & Ghahramani 2016).
    locked_dropout: float = 0.0
    # Input-character dropout: each character type is dropped from the input for the
    # whole window (AWD-LSTM's embedding dropout, for one-hot input).
    input_dropout: float = 0.0
    # Added at init to the LSTM forget block (GRU: update gate z) of bias_ih, so the
    # cell keeps its state by default; the tanh RNN has no gate and ignores it.
    forget_bias: float = 1.0
    # Recurrent cell: "lstm" (default), "gru" or "rnn" (tanh); parameter layout follows torch.
    cell: str = "lstm"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in DROPOUTS:
            if not (_is_number(getattr(self, name)) and 0.0 <= getattr(self, name) < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not _is_number(self.forget_bias):
            raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias!r}")
        _check_name(self, "cell")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return _from_dict(cls, d, "model config")


ENCODING_ERRORS = ("strict", "replace")
UNKNOWN = ("error", "skip")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `charlstm train` needs, resolved: defaults <- --config file <- flags.

    Stored whole in every checkpoint's meta and as config.toml in the run dir, so a
    run can be resumed exactly or repeated with `--config RUN_DIR/config.toml`.
    The defaults are a quick model: the `small` preset's (what the demo trains)
    without its regularisers; charlstm/presets holds the tuned recipes.
    """

    # --- model --- (defaults and reasons: ModelConfig's, so library and CLI agree)
    hidden_size: int = ModelConfig.hidden_size
    num_layers: int = ModelConfig.num_layers
    # Dropout between layers: only matters for long runs of deep models (overfitting).
    dropout: float = ModelConfig.dropout
    # AWD-LSTM's regularisers, for small corpora where a model overfits (see ModelConfig).
    weight_dropout: float = ModelConfig.weight_dropout
    locked_dropout: float = ModelConfig.locked_dropout
    input_dropout: float = ModelConfig.input_dropout
    forget_bias: float = ModelConfig.forget_bias
    cell: str = ModelConfig.cell

    # --- optimisation ---
    # Adam needs no tuning per corpus; rmsprop is char-rnn's choice.
    optimizer: str = "adam"
    # Peak learning rate, reached after the warmup (4e-3 beat 2e-3 by 0.1 nats at 500 steps).
    lr: float = 4e-3
    # Only for sgd: heavy-ball momentum.
    momentum: float = 0.9
    # Decoupled weight decay on weight matrices (not biases); 0 = off.
    weight_decay: float = 0.0
    # Global-norm gradient clipping threshold; stops the rare exploding BPTT step. 0 = off.
    clip: float = 5.0
    # constant, step (multiply by lr_decay every lr_decay_every steps) or cosine.
    lr_schedule: str = "cosine"
    # Linear ramp from 0 to lr: keeps Adam's first noisy steps from wrecking the init.
    warmup_steps: int = 50
    # Step schedule: factor applied every lr_decay_every steps.
    lr_decay: float = 0.5
    # Step schedule: steps between decays.
    lr_decay_every: int = 1000
    # Cosine schedule: the final lr as a fraction of lr (nanoGPT uses 0.1).
    min_lr_ratio: float = 0.1

    # --- regularisation (AWD-LSTM's; see charlstm.penalties, docs/derivation.md) ---
    # AR: adds ar * mean(h^2) of the top layer's output to the objective, keeping
    # activations small (AWD-LSTM uses 2 on word models); 0 = off.
    ar: float = 0.0
    # TAR: adds tar * mean((h[t] - h[t-1])^2) of the top layer's output, so the state
    # changes slowly from one character to the next (AWD-LSTM uses 1); 0 = off.
    tar: float = 0.0
    # Validation (so the best checkpoint), eval, sample, export and charlstm.load use an
    # exponential moving average of the weights with this decay, bias-corrected so early
    # steps average what there is: it smooths away the last updates' noise. 0 = off
    # (the raw weights); 0.999 averages over about the last 1000 steps.
    ema_decay: float = 0.0

    # --- data ---
    # A text file, "tinyshakespeare" (found or downloaded, see charlstm.datasets), a
    # directory (of texts, or made by `charlstm prepare`: its ids read from disk as
    # training goes), "-" for stdin, or a list of these joined in order (charlstm.sources).
    data: str | tuple[str, ...] = "tinyshakespeare"
    # T: characters per truncated-BPTT window; gradients flow back this far.
    seq_len: int = 64
    # B: parallel contiguous streams; larger = smoother gradients, more chars/s.
    batch_size: int = 32
    # Last fraction of the text held out for validation (nanoGPT's split at 0.1); with
    # test_frac, the fraction before the test split.
    val_frac: float = 0.1
    # strict: invalid UTF-8 is an error; replace: substitute U+FFFD and go on.
    encoding_errors: str = "strict"

    # --- stopping (the first one reached stops; if none is set, time_budget = 5) ---
    # Optimizer steps in total (across resumes).
    max_steps: int | None = None
    # Passes over the training split (fractions allowed).
    epochs: float | None = None
    # Minutes of training (across resumes); with no step limit the schedule follows time.
    time_budget: float | None = None

    # --- output ---
    # Run directory: config.toml, log.jsonl, last.safetensors, best.safetensors.
    # Empty: the CLI picks runs/<data name>-<date>-<time>, so runs never collide.
    out: str = ""
    # Steps between validation passes (and `best` checkpoints); 0 = only at the end.
    # A pass over Tiny Shakespeare's 111k val chars costs about 30 training steps.
    eval_every: int = 500
    # Stop after this many validation passes without a new best (early stopping; the
    # best checkpoint is kept); 0 = off. Counts passes, not steps, so it follows
    # --eval-every; a stop is saved like any other and resumes with a larger value.
    patience: int = 0
    # Validation passes during training score the first eval_chars characters of the
    # validation split (0 = all of it): fixed, so losses compare from pass to pass, and
    # bounded, so a big corpus does not spend its time validating (a pass over 200,000
    # characters takes a few seconds at 1x384). The default keeps Tiny Shakespeare's
    # whole 111,540-character split; `charlstm eval` scores a whole split.
    eval_chars: int = 200_000
    # Steps between progress lines and log.jsonl records.
    log_every: int = 20
    # Steps between `last` checkpoints (one is always written at the end).
    checkpoint_every: int = 200
    # Seeds the initialisation and the dropout stream.
    seed: int = 0
    # Fine-tuning: a run directory or checkpoint whose weights (and so shape and
    # vocabulary) the run starts from, instead of a random init; "" = from scratch.
    init_from: str = ""

    # --- fields added for peers' habits and fine-tuning (issue 25) ---
    # The very end of the text held out as a test split, after the validation split:
    # never seen in training nor used to pick the best checkpoint; `charlstm eval RUN
    # --split test` scores it once, at the end. 0 = none.
    test_frac: float = 0.0
    # Steps between short samples (printed, appended to RUN_DIR/samples.txt): watching
    # the text improve is char-rnn's habit. 0 = off.
    sample_every: int = 0
    # Evaluated checkpoints kept besides last and best, named by step and validation
    # loss (step-002500-val1.6994.safetensors), the oldest removed. 0 = none.
    keep: int = 0
    # Characters of the text outside an --init-from model's vocabulary: "error", or
    # "skip" (left out of the text, counted and said once).
    unknown: str = "error"
    # Fine-tuning: give characters of the new text the model lacks fresh rows (input
    # columns and output rows initialised as a new model's); the old ones keep theirs.
    extend_vocab: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "seq_len", "batch_size", "log_every",
                     "checkpoint_every", "lr_decay_every"):
            _check_int(self, name, low=1)
        for name in ("warmup_steps", "eval_every", "patience", "sample_every", "keep",
                     "eval_chars"):
            _check_int(self, name, low=0)
        _check_int(self, "seed", low=0)
        if self.max_steps is not None:
            _check_int(self, "max_steps", low=1)
        for name in ("lr", "epochs", "time_budget"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        for name in ("momentum", "weight_decay", "clip", "ar", "tar"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got "
                                 f"{getattr(self, name)!r}")
        ranges = [(name, 0.0, 1.0) for name in DROPOUTS]
        for name, low, high in (*ranges, ("val_frac", 0.0, 1.0), ("test_frac", 0.0, 1.0),
                                ("ema_decay", 0.0, 1.0),
                                ("min_lr_ratio", 0.0, 1.0 + 1e-12)):
            value = getattr(self, name)
            if not (_is_number(value) and low <= value < high):
                raise ValueError(f"{name} must be in [{low:g}, {high:g}), got {value!r}")
        if not (_is_number(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not _is_number(self.forget_bias):
            raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias!r}")
        if abs(self.forget_bias) > MAX_FORGET_BIAS:
            raise ValueError(f"forget_bias must be a number in [-{MAX_FORGET_BIAS:g}, "
                             f"{MAX_FORGET_BIAS:g}], got {self.forget_bias!r}")
        if self.lr * self.weight_decay >= 1:  # each step scales the weights by 1 - lr * wd
            raise ValueError(f"weight_decay must be below 1 / lr = {1 / self.lr:.4g} (each "
                             "step multiplies the weights by 1 - lr x weight_decay), got "
                             f"{self.weight_decay!r}")
        for name in ("cell", "optimizer", "lr_schedule"):
            _check_name(self, name)
        if self.encoding_errors not in ENCODING_ERRORS:
            raise ValueError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}, "
                             f"got {self.encoding_errors!r}")
        if self.val_frac + self.test_frac >= 1:
            raise ValueError(f"test_frac must leave text to train on: val_frac + test_frac "
                             f"must be below 1, got {self.val_frac!r} + {self.test_frac!r}")
        data = [self.data] if isinstance(self.data, str) else self.data
        if (not isinstance(data, (list, tuple)) or not data
                or not all(isinstance(d, str) and d for d in data)):
            raise ValueError("data must be a non-empty string or a list of them")
        # one text: a string; several: a tuple (hashable, equal however it was given)
        object.__setattr__(self, "data", data[0] if len(data) == 1 else tuple(data))
        if self.unknown not in UNKNOWN:
            raise ValueError(f"unknown must be one of {', '.join(UNKNOWN)}, got "
                             f"{self.unknown!r}")
        if not isinstance(self.extend_vocab, bool):
            raise ValueError(f"extend_vocab must be true or false, got {self.extend_vocab!r}")
        if self.extend_vocab and self.unknown == "skip":
            raise ValueError("extend_vocab gives unknown characters rows of their own; "
                             "unknown = skip leaves them out: choose one")
        if (self.extend_vocab or self.unknown == "skip") and not self.init_from:
            name = "extend_vocab" if self.extend_vocab else "unknown"
            raise ValueError(f"{name} applies to fine-tuning: it needs init_from (a new "
                             "model's vocabulary is its text's)")
        for name in ("out", "init_from"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, hidden_size=self.hidden_size,
                           num_layers=self.num_layers, forget_bias=self.forget_bias,
                           cell=self.cell, **{name: getattr(self, name) for name in DROPOUTS})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict (a checkpoint, a TOML file); unknown keys are an error."""
        return _from_dict(cls, d, "train config")


def _from_dict(cls, d: dict, what: str):
    """cls(**d), but a key that is not a field is a ValueError naming it, with the
    key it was likely a typo of, else every known key."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        guesses = {key: closest(key, known) for key in unknown}
        named = ", ".join(key + (f" (did you mean {guesses[key]}?)" if guesses[key] else "")
                          for key in unknown)
        listed = "" if all(guesses.values()) else f" (known: {', '.join(sorted(known))})"
        raise ValueError(f"unknown {what} keys: {named}{listed}")
    return cls(**d)


def describe_dropouts(config: dict) -> str:
    """The dropout rates that are set ("dropout 0.2, locked dropout 0.3") of a model
    config's dict, or "no dropout"; a checkpoint written before the AWD-LSTM rates
    existed has none of them. A rate of 0 beside a set one reads as a contradiction."""
    rates = [f"{name.replace('_', ' ')} {config.get(name, 0.0):g}" for name in DROPOUTS
             if config.get(name, 0.0) > 0]
    return ", ".join(rates) or "no dropout"


def a_cell(cell: str) -> str:
    """A cell's name in a sentence, with its article as it is read aloud: an LSTM,
    a GRU, an RNN."""
    name = cell.upper()
    return ("an " if name[0] in "AEFHILMNORSX" else "a ") + name


def name_flag(message: str, given) -> str:
    """A config ValueError's message ("max_steps must be ...") with the setting written
    as the flag the user typed ("--max-steps must be ..."), if it is one of `given`."""
    key = message.split(" ", 1)[0]
    return "--" + key.replace("_", "-") + message[len(key):] if key in given else message


def _is_number(value) -> bool:
    """A finite int or float that float32 can hold: inf and nan pass every comparison
    they should fail (or fail silently later, as a NaN loss or an endless run), and a
    value beyond float32 becomes inf in the weights, so none is ever valid."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(value) <= FLOAT32_MAX)


def _check_name(config, name: str) -> None:
    """A registry name (cell, optimizer, lr_schedule) is a non-empty string here; whether
    it is registered is checked where it is looked up (cells.get_cell,
    optim.get_optimizer, schedules.get_schedule), so config imports no registry."""
    value = getattr(config, name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_int(config, name: str, low: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def load_toml(path) -> dict:
    """The flat key = value table of a --config file; a bad file is a ValueError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"no such config file: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    nested = [k for k, v in table.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"{path}: unexpected table(s) [{'], ['.join(nested)}]; write the "
                         "settings as top-level key = value lines")
    return table


def dump_toml(config: TrainConfig) -> str:
    """config as a TOML file that load_toml reads back (unset limits are left out)."""
    lines = ["# charlstm train configuration (resolved); reuse with --config FILE",
             "# flags given on the command line override these values"]
    for key, value in config.to_dict().items():
        if value is None:
            continue
        # JSON string escapes are valid TOML basic-string escapes, a JSON list of strings
        # and true/false are TOML too; repr(float) is valid TOML
        text = json.dumps(value) if isinstance(value, (str, tuple, bool)) else repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
