"""Faults a user's machine throws at a run: a full disk, a read-only directory, a closed
pipe, a second writer, a killed write's litter, a hung-up terminal. Each ends in one
line on stderr naming the file and what to do, a documented exit status, and nothing
lost. In-process where possible; a subprocess only where a pipe or a signal needs one.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_cli import TEXT, TINY

from charlstm import cli, fsutil
from charlstm.checkpoint import load_checkpoint
from charlstm.lockfile import run_dir_lock

# charlstm.train is the library's train(); the trainer module is charlstm.train's entry in
# sys.modules (`from charlstm.train import fit` works too)
train_module = importlib.import_module("charlstm.loop")


@pytest.fixture
def corpus(tmp_path) -> Path:
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path / "corpus.txt"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), err
    return lines[0]


@pytest.fixture
def trained(tmp_path, corpus, capsys) -> Path:
    """A finished 4-step run (last.safetensors at step 4)."""
    run = tmp_path / "r"
    assert run_cli(capsys, "train", "--data", corpus, "--out", run, "--max-steps", 4,
                   *TINY)[0] == 0
    return run


def fail_fsync_from(monkeypatch, n: int, code=errno.ENOSPC) -> None:
    """os.fsync fails with `code` from its n-th call on (as a full disk does)."""
    calls, real = [], os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= n:
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(fsutil.os, "fsync", fsync)


def test_disk_full_while_saving_keeps_the_last_checkpoint(tmp_path, corpus, capsys,
                                                          monkeypatch):
    run = tmp_path / "r"
    # fsyncs: the run marker and config.toml (file, dir each), last @ step 2 (file, dir),
    # then best @ step 4 fails
    fail_fsync_from(monkeypatch, 7)
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", run, "--max-steps", 20,
                         "--checkpoint-every", 2, *TINY)
    line = one_line(err)
    assert rc == 1 and f"{run / 'best.safetensors'}: No space left on device" in line
    assert "free some space" in line and f"charlstm train --resume {run}" in line
    assert "(step 2) is intact" in line
    assert load_checkpoint(run / "last.safetensors").meta["step"] == 2
    assert not list(run.glob(".*.tmp")) and not (run / "best.safetensors").exists()
    monkeypatch.undo()
    rc, _, _ = run_cli(capsys, "train", "--resume", run, "--max-steps", 6)
    assert rc == 0 and load_checkpoint(run / "last.safetensors").meta["step"] == 6


def test_disk_full_before_the_first_checkpoint_says_none_is_left(tmp_path, corpus, capsys,
                                                                 monkeypatch):
    fail_fsync_from(monkeypatch, 5)  # marker and config.toml are written; last @ 2 is not
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", tmp_path / "r",
                         "--max-steps", 20, "--checkpoint-every", 2, *TINY)
    line = one_line(err)
    assert rc == 1 and "No space left on device" in line
    assert line.endswith(f"Training stopped at step 2; no checkpoint is left in {tmp_path / 'r'}")


def test_read_only_run_dir_for_resume_is_one_line(trained, capsys, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)
    monkeypatch.setattr("charlstm.lockfile.os.open", read_only)
    before = (trained / "last.safetensors").read_bytes()
    rc, _, err = run_cli(capsys, "train", "--resume", trained, "--max-steps", 8)
    line = one_line(err)
    assert rc == 1 and f"cannot write in the run directory {trained}" in line
    assert "Read-only file system" in line and "writable" in line
    assert (trained / "last.safetensors").read_bytes() == before


def test_export_into_a_read_only_directory_is_one_line(trained, tmp_path, capsys,
                                                       monkeypatch):
    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)
    rc, _, err = run_cli(capsys, "export", trained, tmp_path / "m.safetensors")
    line = one_line(err)
    assert rc == 1 and f"{tmp_path / 'm.safetensors'}: Permission denied" in line
    assert "make it writable" in line
    assert not (tmp_path / "m.safetensors").exists()


def test_a_second_writer_is_refused_with_the_holders_pid(trained, tmp_path, corpus, capsys):
    with run_dir_lock(trained):  # flock is per open file: this process counts as another
        assert (trained / ".lock").read_text() == f"{os.getpid()}\n"
        for argv in (["train", "--resume", trained, "--max-steps", 8],
                     ["train", "--data", corpus, "--out", trained, "--force", *TINY]):
            rc, _, err = run_cli(capsys, *argv)
            line = one_line(err)
            assert rc == 1 and f"{trained} is in use by another charlstm train " \
                f"(pid {os.getpid()})" in line
        assert load_checkpoint(trained / "last.safetensors").meta["step"] == 4  # untouched
    assert not (trained / ".lock").exists()  # released and removed
    assert run_cli(capsys, "train", "--resume", trained, "--max-steps", 6)[0] == 0


def test_a_lock_left_by_a_killed_run_is_taken_over(trained, capsys):
    (trained / ".lock").write_text("999999\n")  # no process holds it
    assert run_cli(capsys, "train", "--resume", trained, "--max-steps", 6)[0] == 0


def test_stale_temp_files_are_cleaned_on_start(trained, capsys):
    stale = trained / ".last.safetensors.k2j4h5g1.tmp"  # a write killed before its rename
    stale.write_bytes(b"half a checkpoint")
    other = trained / "notes.tmp"  # not ours: left alone
    other.write_text("mine")
    assert run_cli(capsys, "train", "--resume", trained, "--max-steps", 6)[0] == 0
    assert not stale.exists() and other.exists()


def shell(cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_info_into_a_closed_pipe_ends_quietly(trained):
    # head -n 0 exits at once, before charlstm writes: its first line meets EPIPE
    proc = shell(f"set -o pipefail; {sys.executable} -m charlstm.cli info {trained} | head -n 0",
                 executable="/bin/bash")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_training_whose_reader_left_keeps_training_and_saves(tmp_path, corpus):
    run = tmp_path / "r"
    proc = shell(f"set -o pipefail; {sys.executable} -m charlstm.cli train --data {corpus} "
                 f"--out {run} --max-steps 200 --log-every 1 --eval-every 50 "
                 f"{' '.join(TINY[:-4])} | head -2", executable="/bin/bash")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2 and "Traceback" not in proc.stderr
    assert load_checkpoint(run / "last.safetensors").meta["step"] == 200  # trained on


def training_process(run: Path, corpus: Path, python_args=("-m", "charlstm.cli")):
    """An endless `charlstm train` in a subprocess, returned once it has logged a step."""
    proc = subprocess.Popen([sys.executable, *python_args, "train", "--data",
                             str(corpus), "--out", str(run), "--max-steps", "1000000",
                             "--checkpoint-every", "1000000", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = run / "log.jsonl"
    while not (log.exists() and log.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
    return proc


def test_sighup_saves_like_sigterm(tmp_path, corpus):
    run = tmp_path / "r"
    proc = training_process(run, corpus)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "stopped by SIGHUP" in out and f"charlstm train --resume {run}" in out
    assert load_checkpoint(run / "last.safetensors").meta["step"] >= 2


def test_resume_on_a_corrupt_checkpoint_blames_the_file(trained, capsys):
    path = trained / "last.safetensors"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x40  # one bit of one float's exponent, as a failing disk flips it
    path.write_bytes(bytes(data))
    for argv in (["train", "--resume", trained, "--max-steps", 8], ["eval", path],
                 ["sample", path, "--length", 5]):
        rc, _, err = run_cli(capsys, *argv)
        line = one_line(err)
        assert rc == 1 and f"{path} is corrupt" in line and "gradient" not in line


def test_an_undecodable_log_is_reported_once_and_resume_goes_on(trained, capsys):
    log = trained / "log.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b'\xff\xfe{"step": 1}\n' + b"[1, 2]\n" + b'{"step": 99}\n')
    rc, out, err = run_cli(capsys, "train", "--resume", trained, "--max-steps", 6)
    assert rc == 0, err
    assert out.count("dropped 2 unreadable line(s)") == 1
    assert log.read_bytes().startswith(good)  # the good records kept, the future one gone
    assert run_cli(capsys, "plot", trained)[0] == 0


def test_disk_full_while_appending_to_the_log_names_it(tmp_path, corpus, capsys,
                                                        monkeypatch):
    class FullDisk:  # the log file, on a disk that fills up at its first record
        def __init__(self, path, *args, **kwargs):
            self.name = str(path)

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2): no name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None
    monkeypatch.setattr(train_module, "open", FullDisk, raising=False)
    run = tmp_path / "r"
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", run, "--max-steps", 4,
                         *TINY)
    line = one_line(err)
    assert rc == 1 and f"{run / 'log.jsonl'}: No space left on device; the disk is full" in line


def test_disk_full_at_start_names_the_lock_file(tmp_path, corpus, capsys, monkeypatch):
    def pwrite(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", pwrite)
    run = tmp_path / "r"
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", run, "--max-steps", 4,
                         *TINY)
    assert rc == 1 and f"{run / '.lock'}: No space left on device" in one_line(err)
    assert not (run / ".lock").exists()


def test_an_io_error_reading_the_text_is_exit_1_with_advice(tmp_path, corpus, capsys,
                                                             monkeypatch):
    real = Path.read_bytes

    def failing(self):
        if self == corpus:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", failing)
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", tmp_path / "r", *TINY)
    line = one_line(err)
    assert rc == 1 and f"cannot read {corpus}: Input/output error; the disk reported" in line
    assert not (tmp_path / "r").exists()
