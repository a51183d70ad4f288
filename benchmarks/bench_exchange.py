"""The per-step exchange of `--distributed mpi`, against torch.distributed's (gloo).

Two processes on this machine exchange a float32 buffer the size of a model's gradients
(default: the default model, 1 x 384 LSTM on 65 characters, 718,913 parameters) the way
distributed.py does (all-gather, then the parts added in rank order), and with a plain
all-reduce for comparison; the median of --repeats exchanges, in milliseconds.

    mpiexec -n 2 python benchmarks/bench_exchange.py mpi
    python benchmarks/bench_exchange.py torch        # spawns its own two processes
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

N_DEFAULT = 718_913


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_mpi(n: int, repeats: int) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    buf = np.random.default_rng(comm.rank).standard_normal(n).astype(np.float32)
    out = np.empty((comm.size, n), np.float32)

    def gather_sum():
        comm.Allgather(buf, out)
        total = out[0].copy()
        for row in out[1:]:
            total += row

    def allreduce():
        comm.Allreduce(MPI.IN_PLACE, buf.copy(), op=MPI.SUM)
    gather_sum(), allreduce()  # warm up
    results = (_median_ms(gather_sum, repeats), _median_ms(allreduce, repeats))
    if comm.rank == 0:
        print(f"mpi4py {MPI.Get_library_version().splitlines()[0].strip()}, "
              f"{comm.size} ranks, {n:,} float32: all-gather + sum {results[0]:.2f} ms, "
              f"all-reduce {results[1]:.2f} ms")


def _torch_rank(rank: int, size: int, n: int, repeats: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    buf = torch.from_numpy(np.random.default_rng(rank).standard_normal(n).astype(np.float32))
    parts = [torch.empty_like(buf) for _ in range(size)]

    def gather_sum():
        dist.all_gather(parts, buf)
        total = parts[0].clone()
        for p in parts[1:]:
            total += p

    def allreduce():
        dist.all_reduce(buf.clone())
    gather_sum(), allreduce()
    results = (_median_ms(gather_sum, repeats), _median_ms(allreduce, repeats))
    if rank == 0:
        print(f"torch {torch.__version__} gloo, {size} ranks, {n:,} float32: all-gather + "
              f"sum {results[0]:.2f} ms, all-reduce {results[1]:.2f} ms")
    dist.destroy_process_group()


def bench_torch(n: int, repeats: int, size: int = 2) -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    mp.spawn(_torch_rank, args=(size, n, repeats), nprocs=size, join=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backend", choices=["mpi", "torch"])
    p.add_argument("--floats", type=int, default=N_DEFAULT)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    (bench_mpi if args.backend == "mpi" else bench_torch)(args.floats, args.repeats)


if __name__ == "__main__":
    main()
