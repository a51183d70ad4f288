"""One training run across MPI ranks: rank 0 leads, the others follow.

Rank 0 starts or resumes the run exactly as one process would (session.py: reading
the data, claiming and locking the run directory, the resume checks) and, just
before the first step, sends the other ranks the whole Run as checkpoint bytes
(checkpoint.checkpoint_bytes: weights, optimiser, state, dropout generator, config).
Every other rank reads the same text itself (each machine needs it at the same path;
its checksum is checked against rank 0's), rebuilds the Run and enters the same loop
(loop.fit), which writes nothing on ranks other than 0. From there every rank takes
the same decisions at the same steps (distributed.py), so no rank waits for another
at a collective that never comes.

A failure on any rank after the hand-over (a full disk on rank 0, a missing text on
rank 1) prints one line naming the rank and ends every rank through MPI_Abort at once;
the last checkpoint is intact, since every write is atomic.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

from .checkpoint import checkpoint_bytes, parse_checkpoint
from .config import TrainConfig
from .data import Batches
from .distributed import Communicator, rank_streams
from .errors import UserError, os_error_message
from .loop import Outcome, fit
from .run_state import TrainingError, run_from_checkpoint
from .session import OnStart, Start, load_data
from .text import Vocab

# begin(on_start) starts or resumes the run on rank 0 (a session function with its
# arguments bound) and returns its Outcome.
Begin = Callable[[OnStart], Outcome]


def where(comm: Communicator) -> str:
    """This rank, as messages name it."""
    return f"rank {comm.rank} of {comm.size} (on {socket.gethostname()})"


def lead(comm: Communicator, begin: Begin, on_start: OnStart | None = None) -> Outcome:
    """Rank 0: run begin with an on_start that first hands the Run to the other ranks.
    When rank 0 ends before that (an error, a finished run), the others are told there
    is nothing to train."""
    handed = False

    def hand_over(start: Start) -> None:
        nonlocal handed
        rank_streams(start.run.config.batch_size, comm.size)  # refused before any step
        comm.share(checkpoint_bytes(start.run.checkpoint()))
        handed = True
        start.run.comm = comm
        if on_start:
            on_start(start)

    try:
        with failures_abort(comm, lambda: handed):
            return begin(hand_over)
    finally:
        if not handed:
            comm.share(b"")


def follow(comm: Communicator) -> Outcome | None:
    """Ranks other than 0: receive the Run from rank 0 and train it silently; None when
    rank 0 has nothing to train."""
    data = comm.share(None)
    if not data:
        return None
    with failures_abort(comm):
        ckpt = parse_checkpoint(data, f"the run rank 0 sent to {where(comm)}")
        config = TrainConfig.from_dict(ckpt.meta["train_config"])
        corpus, sha, path = load_data(config, Vocab(ckpt.vocab))
        if sha != ckpt.meta["data_sha256"]:
            raise TrainingError(f"{path} is not the text rank 0 trains on (its checksum "
                                "differs): every machine needs the same --data")
        batches = Batches(corpus.train, config.batch_size, config.seq_len, source=path)
        run = run_from_checkpoint(ckpt, config, Path(config.out))
        run.comm = comm
        return fit(run, batches, corpus.val, Path(config.out), say=None)


class failures_abort:  # noqa: N801 (used as a context, like contextlib's)
    """Context: an exception inside ends every rank (MPI_Abort) after one line naming this
    rank, since the others would wait for it forever at the next exchange. active():
    whether the ranks are already joined (default: always)."""

    def __init__(self, comm: Communicator, active: Callable[[], bool] = lambda: True):
        self.comm, self.active = comm, active

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or not self.active():
            return False
        if isinstance(error, KeyboardInterrupt):
            message, code = "interrupted", 130
        elif isinstance(error, UserError):
            message, code = f"error: {error}", error.exit_code
        elif isinstance(error, OSError):
            message, code = f"error: {os_error_message(error)}", 1
        else:
            message, code = f"error: {type(error).__name__}: {error}", 1
        print(f"charlstm: {where(self.comm)}: {message}; stopping every rank",
              file=sys.stderr, flush=True)
        self.comm.abort(code)
        return False
