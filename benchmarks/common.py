"""Shared helpers for the benchmarks: threads, timing, FLOPs, peak GEMM, peak memory.

Every benchmark measures charlstm and PyTorch alternately in one process (so both
see the same machine load), reports medians, and runs the memory measurement in a
fresh child process per implementation.

Import this module BEFORE numpy: it fixes the BLAS thread count from --threads
(environment variables are read when numpy loads OpenBLAS).
"""

from __future__ import annotations

import os
import sys


def _threads_flag() -> str | None:
    """The value of --threads N / --threads=N on the command line, read before argparse."""
    for k, arg in enumerate(sys.argv):
        if arg == "--threads" and k + 1 < len(sys.argv):
            return sys.argv[k + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


# Some machines of ours set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) to pin an old
# OpenBLAS to a safe kernel. The numpy wheel's OpenBLAS is current and picks the best
# kernel for the CPU itself (on an AVX-512 machine, SkylakeX: measured 258 GFLOP/s on a
# 2048^3 float32 GEMM against 138 for the pinned Haswell kernel), as it does on a
# user's machine; torch's kernels ignore the variables. So the benchmarks drop both
# (before numpy loads) unless --keep-coretype is given, and every machine line names
# the kernel OpenBLAS runs. The tests and CI leave the environment as it is.
KEEP_CORETYPE = "--keep-coretype" in sys.argv
if not KEEP_CORETYPE:
    for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_var, None)

THREADS = (_threads_flag() or os.environ.get("CHARLSTM_BENCH_THREADS")
           or str(os.cpu_count() or 1))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS

import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def torch_module():
    """torch with the same intra-op thread count as numpy's BLAS."""
    import torch

    torch.set_num_threads(int(THREADS))
    return torch


def machine_line(with_torch: bool = True) -> str:
    """CPU, cores, threads, numpy's OpenBLAS kernel, torch's version (unless
    with_torch is False: for benchmarks that only run charlstm) and the 1-min load."""
    load = load_1min()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kernel = f"numpy {np.__version__} (OpenBLAS kernel {openblas_kernel()})"
    if not with_torch:
        return (f"{cpu}, {os.cpu_count()} cores, {THREADS} threads; {kernel}; "
                f"1-min load at start {load:.2f}")
    torch = torch_module()

    return (f"{cpu}, {os.cpu_count()} cores, {THREADS} threads for both (numpy's BLAS "
            f"{blas_threads()}, torch {torch.get_num_threads()}); {kernel}, torch "
            f"{torch.__version__}; 1-min load at start {load:.2f}")


def blas_threads() -> int | str:
    """The thread count numpy's BLAS runs with now (threadpoolctl), as a check that
    a one-thread column is one thread: both sides are limited before numpy loads
    (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS) and by their set_num_threads."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return lib["num_threads"]
    return "?"


def openblas_kernel() -> str:
    """The CPU kernel numpy's OpenBLAS runs (threadpoolctl's 'architecture')."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas":
            return str(lib.get("architecture"))
    return "none: numpy is not on OpenBLAS"


def add_load_flag(ap) -> None:
    """--load, and --keep-coretype (read at import, see KEEP_CORETYPE)."""
    ap.add_argument("--load", action="store_true",
                    help="spin a second process on one core for the whole run (a busy machine)")
    ap.add_argument("--keep-coretype", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as the environment sets "
                    "them (default: dropped, so OpenBLAS picks its kernel for this CPU)")


def load_1min() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@contextlib.contextmanager
def session(load: bool = False):
    """The frame of one benchmark run: prints the machine line (with the 1-minute
    load at the start) and, at the end, the load then; with load=True a child
    process busy-loops on the last core this process may use for the whole run."""
    spinner = None
    if load:
        core = max(os.sched_getaffinity(0))
        spinner = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, "
                                    f"{{{core}}})\nwhile True:\n    pass"])
    try:
        print(machine_line() + (f"; --load: a process spinning on core {core}" if load else ""))
        yield
        print(f"\n1-min load at end {load_1min():.2f}")
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


# Each timed call follows an untimed call of the same implementation (and a short
# pause): one implementation's first step right after the other's runs far slower
# than its steady state (measured at 2x512, one thread: charlstm 940 ms for a step
# right after a torch step, 668 ms for a step after its own; the pause alone did not
# help), because the two share the process's allocator, caches and threads. What is
# timed is each one's steady state, as in a run that trains only with it.
SETTLE_S = 0.05


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, calling them in turn (A B A B ...)
    so that machine noise hits both alike; each timed call is preceded by an untimed
    one of the same function (see SETTLE_S). Warm-up calls are not timed."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {name: [] for name in fns}
    for r in range(repeats):
        names = list(fns) if r % 2 == 0 else list(reversed(fns))  # alternate who goes first
        for name in names:
            fns[name]()  # back to this implementation's steady state, untimed
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def peak_gemm_gflops(n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Best float32 n x n x n matrix multiply, in GFLOP/s, through numpy (OpenBLAS)
    and torch (MKL): the machine's practical matmul peak at this thread count."""
    torch = torch_module()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    times = interleaved({"numpy": lambda: a @ b, "torch": lambda: ta @ tb}, repeats)
    return {k: 2.0 * n**3 / min(v) / 1e9 for k, v in times.items()}


def lstm_matmul_flops(V: int, H: int, L: int) -> float:
    """Matrix-multiply FLOPs per character of one forward pass: per layer the
    recurrent GEMM (2*4H*H), the input GEMM for layers above the first (2*4H*H; the
    first is a gather), and the decoder (2*H*V). Element-wise work is not counted."""
    return L * 2 * 4 * H * H + (L - 1) * 2 * 4 * H * H + 2 * H * V


def train_flops(V: int, H: int, L: int) -> float:
    """Forward + backward: the backward does two GEMMs (input and weight gradients)
    for each forward GEMM, so 3x the forward's matmul FLOPs per character."""
    return 3 * lstm_matmul_flops(V, H, L)


def run_child(script: str, args: list[str]) -> dict:
    """Run `python script args` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ, CHARLSTM_BENCH_THREADS=THREADS)
    out = subprocess.run([sys.executable, script, *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rss_mb() -> float:
    """Current resident set size (MiB) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_peak_growth(setup, work) -> float:
    """Peak RSS growth (MiB) while running work() after setup(): the memory the
    work itself needs, independent of what importing numpy or torch costs."""
    setup()
    base = rss_mb()
    reset_peak_rss()
    work()
    return peak_rss_mb() - base


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def read_corpus(val_frac: float = 0.1):
    """Tiny Shakespeare as (train ids, val ids, vocab size), the project's 90/10 split."""
    from charlstm.data import make_corpus
    from charlstm.datasets import resolve_data
    from charlstm.errors import UserError

    try:  # found the way `--data tinyshakespeare` finds it (data dir, cache, download)
        path = resolve_data("tinyshakespeare")
    except UserError as e:
        sys.exit(f"error: {e}")
    corpus = make_corpus(path.read_text(encoding="utf-8"), val_frac)
    return corpus.train, corpus.val, len(corpus.vocab.chars)
