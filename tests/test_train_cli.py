"""`charlstm train` from the command line: flags, config files, bad input, signals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlstm import layers
from charlstm.checkpoint import load_checkpoint
from charlstm.cli import main
from charlstm.config import TrainConfig, load_toml
from charlstm.errors import UserError

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))
TINY = ["--hidden-size", "8", "--num-layers", "1", "--seq-len", "8", "--batch-size", "2",
        "--log-every", "2", "--eval-every", "4"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_train_writes_a_complete_run(tmp_path, corpus, charlstm_cli):
    rc, out, _ = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "r", "--max-steps", 6,
                              *TINY)
    assert rc == 0 and "done at step 6" in out and "val loss" in out
    run = tmp_path / "r"
    assert {p.name for p in run.iterdir()} == {".charlstm-run", "config.toml", "log.jsonl",
                                               "last.safetensors",
                                               "best.safetensors"}
    config = TrainConfig.from_dict(load_toml(run / "config.toml"))
    assert config.hidden_size == 8 and config.max_steps == 6 and config.data == str(corpus)
    ck = load_checkpoint(run / "last.safetensors")
    assert TrainConfig.from_dict(ck.meta["train_config"]) == config
    assert ck.meta["step"] == 6 and ck.meta["package_version"]
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").open()] == [2, 4, 6]


def test_config_file_then_flags_override(tmp_path, corpus, charlstm_cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{corpus}"\nhidden_size = 6\nmax_steps = 3\nseq_len = 4\n'
                   'batch_size = 2\nlr = 0.01\n', encoding="utf-8")
    rc, _, _ = charlstm_cli("train", "--config", cfg, "--out", tmp_path / "r", "--max-steps", 5)
    assert rc == 0
    saved = load_toml(tmp_path / "r/config.toml")
    assert (saved["hidden_size"], saved["max_steps"], saved["lr"]) == (6, 5, 0.01)
    # the saved file reproduces the run's settings
    rc, _, _ = charlstm_cli("train", "--config", tmp_path / "r/config.toml", "--out",
                            tmp_path / "r2")
    assert rc == 0 and load_toml(tmp_path / "r2/config.toml") == {
        **saved, "out": str(tmp_path / "r2")}


@pytest.mark.parametrize("content, message", [
    ("hidden_size = 8\nhiden_layers = 2\n", "unknown train config keys: hiden_layers"),
    ("hidden_size = \n", "is not valid TOML"),
    ("[model]\nhidden_size = 8\n", "unexpected table"),
    ('hidden_size = "big"\n', "hidden_size must be a positive integer"),
])
def test_bad_config_files_are_one_line_errors_and_tracebacks_with_debug(
        tmp_path, charlstm_cli, content, message):
    (tmp_path / "c.toml").write_text(content, encoding="utf-8")
    assert message in charlstm_cli.error("train", "--config", tmp_path / "c.toml")
    with pytest.raises(UserError, match=message.split(":")[0]):  # --debug: the traceback
        main(["--debug", "train", "--config", str(tmp_path / "c.toml")])
    with pytest.raises(UserError, match=message.split(":")[0]):  # after the command too
        main(["train", "--config", str(tmp_path / "c.toml"), "--debug"])
    assert "no such config file" in charlstm_cli.error("train", "--config", tmp_path / "nope.toml")


@pytest.mark.parametrize("flags, message", [
    (["--hidden-size", "0"], "--hidden-size must be a positive integer"),
    (["--num-layers", "-1"], "--num-layers must be a positive integer"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout must be in [0, 1)"),
    (["--val-frac", "1"], "--val-frac must be in [0, 1)"),
    (["--lr", "0"], "--lr must be a finite positive number"),
    (["--lr", "inf"], "--lr must be a finite positive number, got inf"),
    (["--clip", "-1"], "--clip must be a finite number >= 0"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number >= 0, got inf"),
    (["--forget-bias", "inf"], "--forget-bias must be a finite number, got inf"),
    (["--ar", "-1"], "--ar must be a finite number >= 0, got -1.0"),
    (["--tar", "nan"], "--tar must be a finite number >= 0, got nan"),
    (["--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
    (["--forget-bias", "nan"], "--forget-bias must be a finite number, got nan"),
    (["--dropout", "nan"], "--dropout must be in [0, 1), got nan"),
    (["--weight-dropout", "1"], "--weight-dropout must be in [0, 1), got 1.0"),
    (["--locked-dropout", "-0.1"], "--locked-dropout must be in [0, 1)"),
    (["--input-dropout", "nan"], "--input-dropout must be in [0, 1), got nan"),
    (["--seq-len", "0"], "--seq-len must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--max-steps", "0"], "--max-steps must be a positive integer"),
    (["--time-budget", "-5"], "--time-budget must be a finite positive number"),
    (["--time-budget", "inf"], "--time-budget must be a finite positive number, got inf"),
    (["--epochs", "0"], "--epochs must be a finite positive number"),
    (["--epochs", "inf"], "--epochs must be a finite positive number, got inf"),
])
def test_out_of_range_values_are_usage_errors(tmp_path, corpus, charlstm_cli, flags, message):
    line = charlstm_cli.error("train", "--data", corpus, "--out", tmp_path / "r", *flags)
    assert message in line
    assert not (tmp_path / "r").exists()  # nothing written


def test_awd_dropout_flags_reach_the_run_and_its_files(tmp_path, corpus, charlstm_cli):
    rc, out, _ = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "r", "--max-steps", 2,
                              *TINY, "--weight-dropout", 0.5, "--locked-dropout", 0.25,
                              "--input-dropout", 0.1)
    assert rc == 0
    assert "x 8, weight dropout 0.5, locked dropout 0.25, input dropout 0.1," in out
    rates = dict(weight_dropout=0.5, locked_dropout=0.25, input_dropout=0.1)
    config = TrainConfig.from_dict(load_toml(tmp_path / "r/config.toml"))
    ck = load_checkpoint(tmp_path / "r/last.safetensors")
    for key, value in rates.items():
        assert getattr(config, key) == getattr(ck.config, key) == value
    assert "weight dropout 0.5, locked dropout 0.25" in charlstm_cli.ok("info", tmp_path / "r")


def test_unparsable_and_unknown_choices_exit_2(charlstm_cli):
    for flags, message in ((["--seq-len", "abc"], "expected an integer"),
                           (["--cell", "transformer"], "invalid choice"),
                           (["--optimizer", "lion"], "invalid choice")):
        assert message in charlstm_cli.error("train", *flags)


def test_bad_data_files_are_one_line_errors(tmp_path, charlstm_cli):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert "is empty" in charlstm_cli.error("train", "--data", tmp_path / "empty.txt")
    assert "no such file" in charlstm_cli.error("train", "--data", tmp_path / "missing.txt")
    (tmp_path / "nothing").mkdir()
    assert "a directory with no text file in it" in charlstm_cli.error(
        "train", "--data", tmp_path / "nothing")
    (tmp_path / "short.txt").write_text("hello world, far too short\n", encoding="utf-8")
    line = charlstm_cli.error("train", "--data", tmp_path / "short.txt")
    assert "one batch needs --batch-size x --seq-len + 1 = 32 x 64 + 1 = 2,049" in line
    assert "lower --batch-size or --seq-len" in line
    (tmp_path / "bad.txt").write_bytes(TEXT.encode()[:100] + b"\xff\xfe" + TEXT.encode())
    assert "not valid UTF-8: byte offset 100" in charlstm_cli.error(
        "train", "--data", tmp_path / "bad.txt", "--out", tmp_path / "r", *TINY)
    assert not (tmp_path / "r").exists()
    rc, out, _ = charlstm_cli("train", "--data", tmp_path / "bad.txt", "--out", tmp_path / "r",
                              "--encoding-errors", "replace", "--max-steps", 2, *TINY)
    assert rc == 0 and "\ufffd" in load_checkpoint(tmp_path / "r/last.safetensors").vocab


def test_unreadable_data_file_is_a_one_line_error(tmp_path, corpus, charlstm_cli, monkeypatch):
    # chmod 0 cannot stop root (CI may run as root), so the read itself is made to fail
    real = Path.read_bytes

    def denied(self):
        if self == corpus:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", denied)
    line = charlstm_cli.error("train", "--data", corpus, "--out", tmp_path / "r", code=1)
    assert f"cannot read {corpus}: Permission denied; no permission" in line
    assert not (tmp_path / "r").exists()


def test_an_existing_run_is_never_overwritten_without_force(tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    base = ["--data", corpus, "--out", run, "--max-steps", 2, *TINY]
    assert charlstm_cli("train", *base)[0] == 0
    (run / "notes.md").write_text("mine", encoding="utf-8")
    before = (run / "last.safetensors").read_bytes()
    line = charlstm_cli.error("train", *base)
    assert "already holds a run" in line and "--resume" in line and "--force" in line
    assert (run / "last.safetensors").read_bytes() == before
    rc, _, _ = charlstm_cli("train", *base[:-len(TINY)], "--seed", 3, *TINY, "--force")
    assert rc == 0 and (run / "last.safetensors").read_bytes() != before
    assert (run / "notes.md").read_text(encoding="utf-8") == "mine"  # not a run file: kept
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert "not a directory" in charlstm_cli.error("train", "--data", corpus, "--out",
                                                   tmp_path / "file", *TINY)


def test_resume_continues_and_refuses_flags_it_cannot_keep(tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    assert charlstm_cli("train", "--data", corpus, "--out", run, "--max-steps", 2, *TINY)[0] == 0
    rc, out, _ = charlstm_cli("train", "--resume", run, "--max-steps", 4)
    assert rc == 0 and "resuming" in out and "done at step 4" in out
    assert "cannot change --hidden-size" in charlstm_cli.error(
        "train", "--resume", run, "--hidden-size", 9, "--max-steps", 6)
    assert "drop --out" in charlstm_cli.error("train", "--resume", run, "--out", tmp_path / "x")
    assert "no such run directory" in charlstm_cli.error("train", "--resume", tmp_path / "none")
    (tmp_path / "empty").mkdir()
    assert "no last.safetensors" in charlstm_cli.error("train", "--resume", tmp_path / "empty")


def test_non_finite_loss_is_one_line_and_exit_1(tmp_path, corpus, charlstm_cli, monkeypatch):
    real = layers.softmax_cross_entropy
    calls = []

    def inf_at_step_3(logits, y, count=None):
        calls.append(1)
        loss, d = real(logits, y, count)
        return (float("inf") if len(calls) == 3 else loss), d
    monkeypatch.setattr(layers, "softmax_cross_entropy", inf_at_step_3)
    line = charlstm_cli.error("train", "--data", corpus, "--out", tmp_path / "r", "--max-steps",
                              "20", "--checkpoint-every", "2", *TINY, code=1)
    assert "the loss became inf at step 3" in line and "(step 2) is intact" in line
    assert "try a lower --lr" in line


def _wait_for(path: Path, proc, timeout=60.0) -> None:
    deadline = time.time() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "training never logged a step"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_prints_resume_command_and_exits_130(tmp_path, corpus, signum, charlstm_cli):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "charlstm.cli", "train", "--data", str(corpus), "--out",
           str(run), "--max-steps", "1000000", "--checkpoint-every", "1000000", *TINY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    _wait_for(run / "log.jsonl", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert f"charlstm train --resume {run}" in out
    assert "Traceback" not in out + err
    ck = load_checkpoint(run / "last.safetensors")
    assert ck.meta["step"] >= 2
    assert not list(run.glob(".*.tmp"))  # no temp file left behind
    done = charlstm_cli.subprocess("train", "--resume", run, "--max-steps", ck.meta["step"] + 2,
                                   env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(run / "last.safetensors").meta["step"] == ck.meta["step"] + 2


def test_tinyshakespeare_by_name_trains_on_the_canonical_text(
        tmp_path, charlstm_cli, monkeypatch, tinyshakespeare):
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(tinyshakespeare.parent))
    rc, out, _ = charlstm_cli("train", "--data", "tinyshakespeare", "--out", tmp_path / "r",
                              "--hidden-size", 8, "--max-steps", 1, "--seq-len", 8,
                              "--eval-every", 0, "--val-frac", 0.001)
    assert rc == 0 and "1,114,278 train / 1,116 val chars, vocab 65" in out
    assert load_toml(tmp_path / "r/config.toml")["data"] == "tinyshakespeare"


@pytest.mark.parametrize("hidden", ["99999999999999999999999", "100000", "20000"])
def test_a_model_too_big_for_the_memory_is_refused_up_front(
        tmp_path, corpus, charlstm_cli, monkeypatch, hidden):
    monkeypatch.setattr("charlstm.resources.available_memory",
                        lambda: (16 * 10**9, "memory available"))
    line = charlstm_cli.error("train", "--data", corpus, "--out", tmp_path / "r", *TINY,
                              "--hidden-size", hidden)
    assert f"LSTM 1 x {hidden} model needs about" in line
    assert "more than the 16.0 GB of memory available" in line and "--hidden-size" in line
    assert not (tmp_path / "r").exists()  # nothing written


def test_memory_estimate_counts_parameters_optimizer_and_one_window():
    from charlstm.config import ModelConfig
    from charlstm.model import param_shapes
    from charlstm.resources import training_bytes
    config = ModelConfig(vocab_size=10, hidden_size=4, num_layers=1)
    n_params = 16 * 10 + 16 * 4 + 16 + 16 + 10 * 4 + 10
    window = 3 * 2 * (2 * 16 + 4 * 4 + 2 * 16 + 3 * 10)
    assert training_bytes(config, "adam", 2, 3) == 4 * (5 * n_params + window)
    assert training_bytes(config, "sgd", 2, 3) == 4 * (4 * n_params + window)
    assert training_bytes(config, "sgd", 2, 3, averaged=True) == 4 * (5 * n_params + window)
    dropped = ModelConfig(vocab_size=10, hidden_size=4, num_layers=1, weight_dropout=0.5,
                          input_dropout=0.1, locked_dropout=0.2)  # masks and masked copies
    assert training_bytes(dropped, "sgd", 2, 3) == 4 * (4 * n_params + 2 * (16 * 4 + 16 * 10)
                                                        + window + 3 * 2 * 4)
    for cell, L in (("lstm", 3), ("gru", 2), ("rnn", 1)):  # the closed form is param_shapes
        config = ModelConfig(vocab_size=7, hidden_size=5, num_layers=L, cell=cell)
        n_params = sum(math.prod(s) for s in param_shapes(config).values())
        assert training_bytes(config, "sgd", 1, 0) == 4 * 4 * n_params


def test_absurd_layer_counts_are_refused_without_building_the_model(
        tmp_path, corpus, charlstm_cli):
    line = charlstm_cli.error("train", "--data", corpus, "--out", tmp_path / "r", *TINY,
                              "--num-layers", "100000000000")
    assert "LSTM 100000000000 x 8 model needs about" in line


def test_names_are_checked_where_they_are_looked_up(monkeypatch):
    """config imports no registry: a cell, optimizer or schedule name is valid when its
    registry holds it, at its lookup and as a CLI choice."""
    from charlstm.cells import CELLS, get_cell
    from charlstm.cli import build_parser
    from charlstm.optim import OPTIMIZERS, get_optimizer
    from charlstm.schedules import SCHEDULES, get_schedule
    for registry, lookup, key, flag in (
            (CELLS, get_cell, "cell", "--cell"),
            (OPTIMIZERS, get_optimizer, "optimizer", "--optimizer"),
            (SCHEDULES, get_schedule, "lr_schedule", "--lr-schedule")):
        with pytest.raises(ValueError, match=f"unknown .*'new'; choose from {', '.join(registry)}"):
            lookup("new")
        with pytest.raises(ValueError, match=f"{key} must be a non-empty string"):
            TrainConfig(**{key: ""})
        monkeypatch.setitem(registry, "new", next(iter(registry.values())))
        assert lookup("new") is registry["new"]
        assert getattr(build_parser().parse_args(["train", flag, "new"]), key) == "new"


@pytest.mark.parametrize("line, message", [
    ('cell = "lstmm"', "unknown cell 'lstmm'; choose from lstm, gru, rnn"),
    ('optimizer = "lion"', "unknown optimizer 'lion'; choose from adam, "),
    ('lr_schedule = "linear"', "unknown lr schedule 'linear'; choose from constant, "),
])
def test_an_unknown_name_in_a_config_file_is_one_line_before_the_run(tmp_path, corpus,
                                                                     charlstm_cli, line, message):
    (tmp_path / "c.toml").write_text(line + "\n", encoding="utf-8")
    error = charlstm_cli.error("train", "--config", tmp_path / "c.toml", "--data", corpus,
                               "--out", tmp_path / "r")
    assert message in error and f"(in {tmp_path / 'c.toml'})" in error
    assert not (tmp_path / "r").exists()


def test_default_run_names_never_collide_within_a_second(tmp_path, corpus, charlstm_cli,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("charlstm.runs.time.strftime", lambda fmt: "20260101-000000")
    for _ in range(2):
        charlstm_cli.ok("train", "--data", corpus, "--max-steps", 1, *TINY)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "corpus-20260101-000000", "corpus-20260101-000000-2"]
