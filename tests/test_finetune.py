"""`charlstm train --init-from RUN|CHECKPOINT`: a new run from trained weights, and the
hints for changing a run's settings that work when followed."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from test_train_cli import TEXT

import charlstm
from charlstm.checkpoint import load_checkpoint
from charlstm.config import load_toml

SMALL = ["--hidden-size", "8", "--num-layers", "2", "--seq-len", "8", "--batch-size", "2",
         "--log-every", "2", "--eval-every", "4"]
NEW_TEXT = "the lazy dog sleeps: the quick fox runs on and on.\n" * 20  # a subset of TEXT's


@pytest.fixture
def base(tmp_path, charlstm_cli):
    """A trained run (2 x 8 LSTM) and a new, smaller text its vocabulary covers."""
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "new.txt").write_text(NEW_TEXT)
    run = tmp_path / "base"
    rc, _, err = charlstm_cli("train", "--data", tmp_path / "corpus.txt", "--out", run,
                              "--max-steps", 6, *SMALL)
    assert rc == 0, err
    return run


def test_init_from_starts_a_new_run_from_the_trained_weights(base, tmp_path, charlstm_cli):
    ft = tmp_path / "ft"
    # a learning rate too small to move the weights shows where they started
    rc, out, err = charlstm_cli("train", "--init-from", base, "--data",
                                tmp_path / "new.txt", "--out", ft, "--max-steps", 1,
                                "--lr", 1e-12, "--seq-len", 8, "--batch-size", 2)
    assert rc == 0, err
    assert f"starting from the weights of {base.resolve()}" in out
    assert "LSTM 2 x 8" in out  # the model's shape, not the default 1 x 384
    start = charlstm.load(base)
    tuned = load_checkpoint(ft / "last.safetensors")
    assert tuned.vocab == start.vocab.chars  # the model's vocabulary, not the new text's
    for name, value in start.params.items():
        np.testing.assert_allclose(tuned.params[name], value, atol=1e-9)
    # fresh optimizer and schedule: step 1 of the new run, the warmup's first lr
    assert tuned.meta["step"] == 1 and tuned.meta["optimizer_step"] == 1
    assert load_toml(ft / "config.toml")["init_from"] == str(base.resolve())
    # and it trains, and resumes, like any run
    rc, out, err = charlstm_cli("train", "--resume", ft, "--max-steps", 4)
    assert rc == 0 and "done at step 4" in out, err


def test_init_from_a_checkpoint_file_with_new_dropout(base, tmp_path, charlstm_cli):
    rc, out, err = charlstm_cli("train", "--init-from", base / "last.safetensors",
                                "--data", tmp_path / "new.txt", "--out", tmp_path / "ft",
                                "--max-steps", 2, "--dropout", 0.3, "--seq-len", 8,
                                "--batch-size", 2, "--locked-dropout", 0.2)
    assert rc == 0, err
    config = load_checkpoint(tmp_path / "ft/last.safetensors").config
    assert config.dropout == 0.3 and config.locked_dropout == 0.2


def test_init_from_refuses_what_it_cannot_keep(base, tmp_path, charlstm_cli):
    (tmp_path / "other.txt").write_text(NEW_TEXT + "Zebra für dich\n")
    args = ["train", "--init-from", base, "--out", tmp_path / "ft", "--max-steps", 2]
    rc, _, err = charlstm_cli(*args, "--data", tmp_path / "other.txt")
    assert rc == 2 and err.count("\n") == 1
    assert "has characters the model's vocabulary lacks: 'Z' 'ü'" in err
    rc, _, err = charlstm_cli(*args, "--data", tmp_path / "new.txt",
                              "--hidden-size", 16)
    assert rc == 2 and "--hidden-size 16 does not match the --init-from model (hidden_size 8)" \
        in err
    rc, _, err = charlstm_cli(*args, "--data", tmp_path / "new.txt", "--cell", "gru")
    assert rc == 2 and "--cell gru does not match" in err
    rc, _, err = charlstm_cli("train", "--resume", base, "--init-from", base)
    assert rc == 2 and "give one of them" in err
    rc, _, err = charlstm_cli(*args, "--data", tmp_path / "new.txt", "--init-from",
                              tmp_path / "nope")
    assert rc == 2 and "no such checkpoint or run directory" in err
    assert not (tmp_path / "ft").exists()


def test_the_hint_for_changing_the_model_size_works_when_followed(base, tmp_path, charlstm_cli):
    rc, _, err = charlstm_cli("train", "--resume", base, "--hidden-size", 16)
    assert rc == 2 and "cannot change --hidden-size" in err
    hint = err.split("start a new run with ")[1].split(" and your changes")[0]
    assert hint == f"--config {shlex.quote(str(base / 'config.toml'))} --out NEW_RUN_DIR"
    # without --out, the run's own config.toml would point back at the run: told to add it
    rc, _, err = charlstm_cli("train", "--config", base / "config.toml",
                              "--hidden-size", 16)
    assert rc == 2 and "pass --out NEW_RUN_DIR" in err
    new = tmp_path / "bigger"
    rc, out, err = charlstm_cli("train", *shlex.split(hint.replace("NEW_RUN_DIR",
                                                                   str(new))),
                                "--hidden-size", 16)
    assert rc == 0, err
    assert load_checkpoint(new / "last.safetensors").config.hidden_size == 16


def test_resuming_on_other_text_is_a_usage_error_pointing_at_init_from(
        base, tmp_path, charlstm_cli):
    rc, _, err = charlstm_cli("train", "--resume", base, "--data",
                              tmp_path / "new.txt", "--max-steps", 8)
    assert rc == 2 and "is not the text this run was trained on" in err
    assert f"fine-tune on this text with --init-from {shlex.quote(str(base))}" in err
    rc, _, err = charlstm_cli("train", "--init-from", base, "--data",
                              tmp_path / "new.txt", "--out", tmp_path / "ft", "--max-steps", 2,
                              "--seq-len", 8, "--batch-size", 2)
    assert rc == 0, err
    # a model-only checkpoint cannot be resumed, but it can start a run
    charlstm.load(base).save(tmp_path / "ft" / "last.safetensors")
    rc, _, err = charlstm_cli("train", "--resume", tmp_path / "ft")
    assert rc == 2 and "cannot be resumed" in err and "--init-from" in err
