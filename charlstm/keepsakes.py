"""What a run leaves besides last and best: --keep's evaluated checkpoints and
--sample-every's samples (char-rnn's lm_*_epoch*_*.t7 files and its habit of watching
samples improve; nanoGPT's keep of every checkpoint).

Both are written by the loop (loop.py) into the run directory, under the names runs.py
owns, so --force and the ownership rules cover them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .checkpoint import save_checkpoint
from .errors import UserError
from .fsutil import atomic_write_bytes
from .run_state import Run
from .runs import SAMPLES, kept_files, kept_name
from .sample import encode_prime, sample_texts

SAMPLE_CHARS = 200  # short enough to read at a glance in the progress lines
SAMPLE_TEMPERATURE = 0.8  # char-rnn's default: below 1, so the text reads as the model's best
HEADER = re.compile(r"=== step (\d+) ===")


def keep_checkpoint(run: Run, out: Path, val_loss: float) -> None:
    """Save the evaluated checkpoint under kept_name, then remove the oldest kept ones
    beyond run.config.keep (only files named by runs.KEPT: ours)."""
    save_checkpoint(out / kept_name(run.step, val_loss), run.checkpoint(val_loss))
    kept = kept_files(out)
    for path in kept[:max(0, len(kept) - run.config.keep)]:
        path.unlink()


def draw_sample(run: Run) -> str:
    """SAMPLE_CHARS characters of the run's model (its average under --ema-decay) at
    SAMPLE_TEMPERATURE from a newline, drawn from the run's seed: the same at every
    resume, and never from the dropout generator, so sampling changes no step."""
    prime_ids, echo = encode_prime(run.vocab, None, seed=run.config.seed)
    return sample_texts(run.model_params, run.model_config, run.vocab, prime_ids, echo,
                        SAMPLE_CHARS, SAMPLE_TEMPERATURE, None, 1.0, run.config.seed, 1)[0]


def write_sample(run: Run, out: Path, line: Callable[[str], None]) -> None:
    """Draw a sample, show it with line(text) and append it to RUN_DIR/samples.txt."""
    text = draw_sample(run)
    line(f"step {run.step} sample (temperature {SAMPLE_TEMPERATURE:g}):\n{text}")
    with open(out / SAMPLES, "a", encoding="utf-8") as f:
        try:
            f.write(f"=== step {run.step} ===\n{text}\n\n")
        except OSError as e:  # a write error names no file: say it is samples.txt
            raise OSError(e.errno, e.strerror, f.name) from None


def truncate_samples(path: Path, step: int) -> None:
    """Drop the samples past a resumed checkpoint's step (drawn after it, before the run
    stopped), so samples.txt reads as one run, as runs.truncate_log does for the log."""
    if not path.is_file():
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}; move it away to resume") from None
    keep = []
    for text in lines:
        header = HEADER.fullmatch(text.rstrip("\n"))
        if header and int(header.group(1)) > step:
            break
        keep.append(text)
    if len(keep) != len(lines):
        atomic_write_bytes(path, "".join(keep).encode("utf-8"))
