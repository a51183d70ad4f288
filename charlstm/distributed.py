"""Data-parallel training across processes: each rank owns a slice of the B streams.

Shape legend: T window length, B streams (the run's whole batch), L layers, H hidden.

The engine already splits a window's streams among threads and sums their gradients
in a fixed order (engine.py); ranks do the same one level up. Every rank holds the
whole run (weights, optimiser, carried state, dropout generator), reads the whole
(T, B) window, draws the whole batch's dropout masks from the shared generator, and
runs engine.loss_and_grads (its threads included) on its contiguous slice of the
streams, dividing by the whole batch's T*B. One exchange per step (`Communicator.
allgather`) gives every rank every rank's gradients, loss, penalty and final-state
slice; each rank adds them in rank order, so every rank computes the same bits and
the clipping and the optimiser update keep the weights equal with no broadcast.

Why all-gather and not all-reduce: MPI_Allreduce may add in an order that depends on
the implementation, the message size and the network, so the same rank count could
give different bits run to run. Gathering the parts and adding them in rank order is
the same order every time, and it also carries the state slices, which are joined,
not added. It costs size x the gradient bytes in memory and receive traffic (see
docs/distributed.md for when that matters).

    comm = MPIComm()                     # under mpiexec; LOCAL is one process
    part = rank_part(comm.rank, comm.size, params, config, x, y, state, masks, ...)
    loss, grads, state, penalty = combine(comm.allgather(part.buffer), part)
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple, Protocol

import numpy as np

from . import engine, pool
from .errors import UserError

# Environment variables that MPI launchers set in every process they start (MPICH's
# Hydra, Intel MPI and Slurm's PMI: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE).
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
MPI_MISSING = ("--distributed mpi needs mpi4py and an MPI library: pip install "
               "'charlstm[mpi]' (mpi4py and MPICH), or mpi4py built against your "
               "cluster's MPI")


class Communicator(Protocol):
    """The few collectives a data-parallel run needs; every rank calls each in step."""

    rank: int  # this process, 0 .. size-1; rank 0 writes files and prints
    size: int  # ranks in the run

    def allgather(self, buffer: np.ndarray) -> np.ndarray:
        """(size, n): row r is rank r's 1-D buffer (the same n and dtype on every rank)."""

    def agree(self, flag: bool, seconds: float) -> tuple[bool, float]:
        """(any rank's flag, the largest seconds): one answer to "stop?" and one clock."""

    def share(self, data: bytes | None) -> bytes:
        """Rank 0's bytes, on every rank (the others pass None)."""

    def abort(self, code: int) -> None:
        """End every rank at once with exit status code (a rank failed alone)."""


class LocalComm:
    """One process: every collective is the identity."""

    rank, size = 0, 1

    def allgather(self, buffer: np.ndarray) -> np.ndarray:
        return buffer[None]

    def agree(self, flag: bool, seconds: float) -> tuple[bool, float]:
        return bool(flag), seconds

    def share(self, data: bytes | None) -> bytes:
        return data or b""

    def abort(self, code: int) -> None:
        raise SystemExit(code)


LOCAL = LocalComm()


class MPIComm:
    """MPI's COMM_WORLD through mpi4py (imported here: it is an optional extra, and
    importing it starts MPI). Only the main thread calls MPI."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            raise UserError(MPI_MISSING, exit_code=2) from None
        except RuntimeError as e:  # mpi4py without an MPI library it can load
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{MPI_MISSING} ({first})", exit_code=2) from None
        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()

    def allgather(self, buffer: np.ndarray) -> np.ndarray:
        out = np.empty((self.size, buffer.size), buffer.dtype)
        self._comm.Allgather(np.ascontiguousarray(buffer), out)
        return out

    def agree(self, flag: bool, seconds: float) -> tuple[bool, float]:
        both = np.array([float(flag), seconds])
        self._comm.Allreduce(self._mpi.IN_PLACE, both, op=self._mpi.MAX)  # max: exact
        return bool(both[0]), float(both[1])

    def share(self, data: bytes | None) -> bytes:
        n = np.array([0 if data is None else len(data)], np.int64)
        self._comm.Bcast(n, root=0)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == 0 and data else \
            np.empty(int(n[0]), np.uint8)
        self._comm.Bcast(buf, root=0)
        return buf.tobytes()

    def abort(self, code: int) -> None:
        sys.stderr.flush()
        self._comm.Abort(code)
        os._exit(code)  # MPICH's Abort may return before the launcher ends this process


def launched_ranks(environ=None) -> int:
    """How many processes an MPI launcher started this one among (1 when none did)."""
    env = os.environ if environ is None else environ
    sizes = [env[var] for var in LAUNCHER_SIZE_VARS if var in env]
    return max([int(n) for n in sizes if n.strip().isdigit()] + [1])


def communicator(kind: str | None) -> Communicator:
    """The communicator for --distributed KIND ("mpi", or None/"none" for one process).
    Started by mpiexec without --distributed mpi, every process would train a run of its
    own: that is refused in one line."""
    if kind in (None, "none"):
        n = launched_ranks()
        if n > 1:
            raise UserError(f"started by an MPI launcher as {n} processes: add "
                            "--distributed mpi to train one run across them (or start one "
                            "process)", exit_code=2)
        return LOCAL
    if kind == "mpi":
        return MPIComm()
    raise UserError(f"--distributed {kind}: expected mpi or none", exit_code=2)


# ----------------------------------------------------------------------------- the step

def rank_streams(B: int, size: int) -> list[slice]:
    """Each rank's contiguous slice of the B streams: the engine's arithmetic with one
    worker per rank (sizes differ by at most one, the wider first)."""
    if size > B:
        raise UserError(f"--batch-size {B} gives fewer streams than the {size} ranks; give "
                        f"--batch-size {size} or more, or fewer ranks", exit_code=2)
    return pool.stream_slices(B, 1, size)


class Part(NamedTuple):
    """One rank's share of a step, flattened for the exchange."""

    buffer: np.ndarray  # grads (name order) | loss, penalty as float64 bits | state slice
    names: list  # gradient names, in buffer order
    shapes: list  # their shapes
    state_shape: tuple  # (parts, L, b_max, H): the state slice, padded to the widest rank


def _scalar_words(values, dtype) -> np.ndarray:
    """float64 values as words of dtype (their exact bits, reinterpreted)."""
    raw = np.asarray(values, np.float64).view(np.uint8)
    return np.frombuffer(raw.tobytes(), dtype)


def rank_part(rank: int, size: int, params: dict, config, x: np.ndarray, y: np.ndarray,
              state, masks=None, penalty=None, weight_masks=None) -> Part:
    """Rank `rank` of `size`'s loss and gradients on its slice of the (T, B) window.

    state and masks are the whole batch's (every rank holds both); weight_masks are
    every rank's same draw. Losses and gradients are divided by the whole T*B, so the
    ranks' parts sum to the whole batch's means."""
    T, B = x.shape
    slices = rank_streams(B, size)
    s = slices[rank]
    out = engine.loss_and_grads(
        params, config, x[:, s], y[:, s], None if state is None else tuple(p[:, s] for p in state),
        None if masks is None else [m[:, s] for m in masks], count=T * B, penalty=penalty,
        weight_masks=weight_masks)
    names = sorted(out.grads)
    dtype = out.grads[names[0]].dtype
    widest = slices[0].stop - slices[0].start
    final = np.stack(out.state)  # (parts, L, b, H)
    padded = np.zeros(final.shape[:2] + (widest,) + final.shape[3:], dtype)
    padded[:, :, :final.shape[2]] = final
    buffer = np.concatenate([out.grads[n].ravel() for n in names]
                            + [_scalar_words([out.loss, out.penalty], dtype), padded.ravel()])
    return Part(buffer, names, [out.grads[n].shape for n in names], padded.shape)


def combine(rows: np.ndarray, part: Part, B: int) -> tuple[float, dict, tuple, float]:
    """The whole batch's (loss, grads, final state, penalty) from every rank's buffer
    (rows[r] is rank r's), added in rank order: the same bits on every rank."""
    sizes = [int(np.prod(shape)) for shape in part.shapes]
    n_grads = sum(sizes)
    n_words = _scalar_words([0.0, 0.0], rows.dtype).size
    total = rows[0, :n_grads].copy()
    for row in rows[1:]:  # a fixed order: the same sum on every rank, run after run
        total += row[:n_grads]
    grads, at = {}, 0
    for name, shape, n in zip(part.names, part.shapes, sizes):
        grads[name] = total[at:at + n].reshape(shape)
        at += n
    loss, penalty = 0.0, 0.0
    for row in rows:
        word = np.frombuffer(row[n_grads:n_grads + n_words].tobytes(), np.float64)
        loss += float(word[0])
        penalty += float(word[1])
    slices = rank_streams(B, len(rows))
    states = [row[n_grads + n_words:].reshape(part.state_shape)[:, :, :s.stop - s.start]
              for row, s in zip(rows, slices)]
    joined = np.concatenate(states, axis=2)
    return loss, grads, tuple(joined), penalty


def loss_and_grads(comm: Communicator, params: dict, config, x: np.ndarray, y: np.ndarray,
                   state, masks=None, penalty=None, weight_masks=None
                   ) -> tuple[float, dict, tuple, float]:
    """The whole batch's (loss, grads, final state, penalty) with the streams split
    across comm's ranks; one process is exactly engine.loss_and_grads."""
    if comm.size == 1:
        out = engine.loss_and_grads(params, config, x, y, state, masks, penalty=penalty,
                                    weight_masks=weight_masks)
        return out.loss, out.grads, out.state, out.penalty
    part = rank_part(comm.rank, comm.size, params, config, x, y, state, masks, penalty,
                     weight_masks)
    return combine(comm.allgather(part.buffer), part, x.shape[1])


def checksum(arrays: dict) -> float:
    """A float64 sum of every array, name order: ranks that hold equal weights agree."""
    return float(sum(np.sum(arrays[k], dtype=np.float64) for k in sorted(arrays)))


def assert_same(comm: Communicator, arrays: dict, what: str = "weights") -> None:
    """Stop if the ranks' arrays differ (they never should: each applies the same sum)."""
    sums = comm.allgather(np.array([checksum(arrays)]))[:, 0]
    if np.any(sums != sums[0]):
        raise UserError(f"the ranks' {what} differ (checksums {sums.tolist()}): are the "
                        "machines running the same charlstm, NumPy and BLAS?")

