"""`charlstm gradcheck` as users run it: a table, a verdict and an exit code."""

from __future__ import annotations

import pytest

from charlstm import fast


def test_gradcheck_passes_and_prints_every_parameter(charlstm_cli):
    rc, out, _ = charlstm_cli("gradcheck", "--hidden-size", 3, "--num-layers", 2, "--seq-len", 3,
                              "--batch-size", 2, "--vocab-size", 4, "--seed", 5)
    assert rc == 0
    for name in ["lstm.weight_ih_l0", "lstm.weight_hh_l1", "lstm.bias_hh_l1", "decoder.weight",
                 "decoder.bias", "state.h0", "state.c0"]:
        assert name in out
    assert "PASS" in out
    errors = [float(line.split()[-3]) for line in out.splitlines()
              if line.startswith(("lstm.", "decoder.", "state."))]
    assert len(errors) == 12 and max(errors) < 1e-7


def test_gradcheck_checks_ar_and_tar_too(charlstm_cli):
    rc, out, _ = charlstm_cli("gradcheck", "--cell", "gru", "--hidden-size", "3", "--seq-len", "3",
                              "--batch-size", "2", "--vocab-size", "4", "--ar", "3", "--tar", "5")
    assert rc == 0 and "AR=3 TAR=5" in out and "PASS" in out


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_gradcheck_checks_every_dropout_too(cell, charlstm_cli):
    rc, out, _ = charlstm_cli("gradcheck", "--cell", cell, "--hidden-size", "3", "--seq-len", "3",
                              "--batch-size", "2", "--vocab-size", "4", "--dropout", "0.3",
                              "--weight-dropout", "0.4", "--locked-dropout", "0.3",
                              "--input-dropout", "0.3", "--ar", "1")
    assert rc == 0 and "PASS" in out, out
    assert "weight_dropout=0.4 locked_dropout=0.3 input_dropout=0.3 AR=1 TAR=0" in out


def test_gradcheck_fails_loudly_on_a_wrong_backward(monkeypatch, charlstm_cli):
    lstm = fast.implementation("lstm")  # the module the model runs
    original = lstm.backward

    def broken(dhs, dstateT, cache):
        dxw, dstate0, dW_hh, db_hh = original(dhs, dstateT, cache)
        return dxw, dstate0, dW_hh, db_hh * 0.9

    monkeypatch.setattr(lstm, "backward", broken)
    rc, out, _ = charlstm_cli("gradcheck", "--hidden-size", 3, "--num-layers", 1, "--seq-len", 2)
    assert rc == 1
    assert "FAIL" in out and " NO" in out


@pytest.mark.parametrize("args", [["--hidden-size", "0"], ["--seq-len", "x"],
                                  ["--dropout", "1.5"], ["--cell", "bogus"],
                                  ["--weight-dropout", "1"], ["--input-dropout", "-0.1"]])
def test_gradcheck_bad_flags_give_one_line_errors(args, charlstm_cli):
    assert args[0] in charlstm_cli.error("gradcheck", *args)


def test_threads_flag_limits_blas_for_the_command(monkeypatch, charlstm_cli):
    """--threads N (on every command) caps the BLAS pool while the command runs."""
    from threadpoolctl import threadpool_info

    from charlstm.commands import gradcheck
    seen = {}

    def spy(args):
        seen["threads"] = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return 0

    monkeypatch.setattr(gradcheck, "run", spy)
    charlstm_cli.ok("gradcheck", "--threads", "1")
    assert seen["threads"] and set(seen["threads"]) == {1}


def test_threads_flag_rejects_zero(charlstm_cli):
    assert "--threads" in charlstm_cli.error("info", "x", "--threads", "0")
