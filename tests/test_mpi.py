"""`mpiexec -n 2 charlstm train --distributed mpi`: the real thing, on localhost.

Proofs: 2 ranks x B/2 train the run 1 process x B trains (the loss curve to float32
rounding); 2 ranks stopped and resumed end bit-identical to 2 ranks straight (exact
resume, and the same bits run to run); a rank that fails stops every rank at once,
naming itself in one line; mpiexec without --distributed mpi is refused. Skipped
where mpi4py or mpiexec is missing (pip install '.[mpi]'); the arithmetic is proven
without MPI in tests/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import TEXT

from charlstm.checkpoint import load_checkpoint

# In a child process: importing mpi4py.MPI starts MPI, and fails without an MPI library.
_MPI_OK = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"],
                         capture_output=True, text=True)
if _MPI_OK.returncode:
    pytest.skip("mpi4py or its MPI library is missing (pip install '.[mpi]'): "
                + (_MPI_OK.stderr.strip().splitlines() or [""])[-1], allow_module_level=True)

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
    shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install mpich, or a system MPI)", allow_module_level=True)


def env() -> dict:
    """The test's environment (conftest's: no network, no user cache) with the reference
    cells: no kernels to compile in each rank, so the runs take seconds."""
    return {**os.environ, "CHARLSTM_BACKEND": "reference"}

ARGS = ["--hidden-size", "16", "--num-layers", "2", "--dropout", "0.2", "--seq-len", "16",
        "--batch-size", "6", "--val-frac", "0.2", "--eval-every", "4", "--log-every", "2",
        "--lr-schedule", "constant", "--warmup-steps", "2", "--threads", "1"]


def charlstm(*args, ranks: int = 0, cwd=None, timeout=240, launch=None):
    """Run charlstm (under mpiexec -n ranks when ranks > 0); the CompletedProcess."""
    cmd = [sys.executable, "-m", "charlstm", *args]
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks), *(launch or []), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(),
                          cwd=cwd)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").open()]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    return path


def test_two_ranks_match_one_process_and_resume_exactly(tmp_path, corpus):
    data = ["--data", str(corpus), *ARGS]
    one = charlstm("train", *data, "--max-steps", "12", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = charlstm("train", "--distributed", "mpi", *data, "--max-steps", "12", "--out",
                   str(tmp_path / "two"), ranks=2)
    assert two.returncode == 0, two.stderr
    assert "ranks  2 processes (MPI), 3 streams each" in two.stdout
    assert two.stdout.count("charlstm: done at step 12") == 1  # rank 0 alone prints
    log1, log2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["step"] for r in log1] == [r["step"] for r in log2]
    for r1, r2 in zip(log1, log2):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-4)
        if r1["val_loss"] is not None:
            assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-4)

    half = charlstm("train", "--distributed", "mpi", *data, "--max-steps", "5", "--out",
                    str(tmp_path / "resumed"), ranks=2)
    assert half.returncode == 0, half.stderr
    rest = charlstm("train", "--distributed", "mpi", "--resume", str(tmp_path / "resumed"),
                    "--max-steps", "12", ranks=2)
    assert rest.returncode == 0, rest.stderr
    a = load_checkpoint(tmp_path / "two" / "last.safetensors")
    b = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    for k in {**a.params, **a.arrays}:
        assert {**a.params, **a.arrays}[k].tobytes() == {**b.params, **b.arrays}[k].tobytes(), k
    assert a.meta["rng"] == b.meta["rng"] and a.meta["step"] == b.meta["step"] == 12


def test_a_failing_rank_stops_every_rank_in_one_line(tmp_path):
    """Rank 1 finds another text under the same name (an MPMD launch, one data directory
    each): it names itself in one line and every rank stops, with nothing half-written."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d, text in zip(dirs, (TEXT * 3, TEXT * 2)):
        d.mkdir()
        (d / "tinyshakespeare.txt").write_text(text, encoding="utf-8")
    args = ["-m", "charlstm", "train", "--distributed", "mpi", "--data", "tinyshakespeare",
            *ARGS, "--max-steps", "50", "--out", str(tmp_path / "run")]
    cmd = [MPIEXEC, "-n", "1", "-env", "CHARLSTM_DATA_DIR", str(dirs[0]), sys.executable,
           *args, ":", "-n", "1", "-env", "CHARLSTM_DATA_DIR", str(dirs[1]), sys.executable,
           *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("charlstm:")]
    assert len(ours) == 1, done.stderr
    assert "rank 1 of 2" in ours[0] and "is not the text rank 0 trains on" in ours[0]
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_mpiexec_without_the_flag_is_refused(tmp_path, corpus):
    done = charlstm("train", "--data", str(corpus), *ARGS, "--max-steps", "2", "--out",
                    str(tmp_path / "run"), ranks=2, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("add --distributed mpi") == 2  # one line from each process
    assert not (tmp_path / "run").exists()


def test_ctrl_c_stops_every_rank_at_one_step_and_saves(tmp_path, corpus):
    """SIGINT to mpiexec reaches every rank: they stop after the same step, rank 0 saves
    and prints how to resume under mpiexec."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable, "-m", "charlstm", "train", "--distributed", "mpi",
         "--data", str(corpus), *ARGS, "--max-steps", "1000000", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 120
        while not ((run / "log.jsonl").is_file() and (run / "log.jsonl").stat().st_size):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"mpiexec -n 2 charlstm train --distributed mpi --resume {run}" in out + err
    step = load_checkpoint(run / "last.safetensors").meta["step"]
    assert step >= 2 and _log(run)[-1]["step"] <= step
