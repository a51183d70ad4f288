"""`charlstm gradcheck` as users run it: a table, a verdict and an exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from charlstm import cli, fast


def test_gradcheck_passes_and_prints_every_parameter(capsys):
    rc = cli.main(["gradcheck", "--hidden-size", "3", "--num-layers", "2", "--seq-len", "3",
                   "--batch-size", "2", "--vocab-size", "4", "--seed", "5"])
    out = capsys.readouterr().out
    assert rc == 0
    for name in ["lstm.weight_ih_l0", "lstm.weight_hh_l1", "lstm.bias_hh_l1", "decoder.weight",
                 "decoder.bias", "state.h0", "state.c0"]:
        assert name in out
    assert "PASS" in out
    errors = [float(line.split()[-3]) for line in out.splitlines()
              if line.startswith(("lstm.", "decoder.", "state."))]
    assert len(errors) == 12 and max(errors) < 1e-7


def test_gradcheck_checks_ar_and_tar_too(capsys):
    rc = cli.main(["gradcheck", "--cell", "gru", "--hidden-size", "3", "--seq-len", "3",
                   "--batch-size", "2", "--vocab-size", "4", "--ar", "3", "--tar", "5"])
    out = capsys.readouterr().out
    assert rc == 0 and "AR=3 TAR=5" in out and "PASS" in out


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_gradcheck_checks_every_dropout_too(cell, capsys):
    rc = cli.main(["gradcheck", "--cell", cell, "--hidden-size", "3", "--seq-len", "3",
                   "--batch-size", "2", "--vocab-size", "4", "--dropout", "0.3",
                   "--weight-dropout", "0.4", "--locked-dropout", "0.3",
                   "--input-dropout", "0.3", "--ar", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "PASS" in out, out
    assert "weight_dropout=0.4 locked_dropout=0.3 input_dropout=0.3 AR=1 TAR=0" in out


def test_gradcheck_fails_loudly_on_a_wrong_backward(monkeypatch, capsys):
    lstm = fast.implementation("lstm")  # the module the model runs
    original = lstm.backward

    def broken(dhs, dstateT, cache):
        dxw, dstate0, dW_hh, db_hh = original(dhs, dstateT, cache)
        return dxw, dstate0, dW_hh, db_hh * 0.9

    monkeypatch.setattr(lstm, "backward", broken)
    rc = cli.main(["gradcheck", "--hidden-size", "3", "--num-layers", "1", "--seq-len", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL" in out and " NO" in out


@pytest.mark.parametrize("args", [["--hidden-size", "0"], ["--seq-len", "x"],
                                  ["--dropout", "1.5"], ["--cell", "bogus"],
                                  ["--weight-dropout", "1"], ["--input-dropout", "-0.1"]])
def test_gradcheck_bad_flags_give_one_line_errors(args):
    proc = subprocess.run([sys.executable, "-m", "charlstm.cli", "gradcheck", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr.strip().splitlines()[-1]


def test_threads_flag_limits_blas_for_the_command(monkeypatch):
    """--threads N (on every command) caps the BLAS pool while the command runs."""
    from threadpoolctl import threadpool_info

    from charlstm.commands import gradcheck
    seen = {}

    def spy(args):
        seen["threads"] = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return 0

    monkeypatch.setattr(gradcheck, "run", spy)
    assert cli.main(["gradcheck", "--threads", "1"]) == 0
    assert seen["threads"] and set(seen["threads"]) == {1}


def test_threads_flag_rejects_zero():
    proc = subprocess.run([sys.executable, "-m", "charlstm.cli", "info", "x", "--threads", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr
