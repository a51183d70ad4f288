"""`charlstm train --init-from RUN|CHECKPOINT`: a new run from trained weights, and the
hints for changing a run's settings that work when followed."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import numpy as np
import pytest
from test_train_cli import TEXT

import charlstm
from charlstm import model
from charlstm.checkpoint import load_checkpoint
from charlstm.config import ModelConfig, load_toml
from charlstm.finetune import extend_params
from charlstm.gradcheck import check_gradients, random_problem

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


# ------------------------------------------------------------ new characters (issue 25)

OTHER = NEW_TEXT + "Zebra für dich\n"  # 'Z' and 'ü' are not in the model's vocabulary


def test_unknown_skip_leaves_new_characters_out_and_says_how_many(base, tmp_path, charlstm_cli):
    (tmp_path / "other.txt").write_text(OTHER)
    ft = tmp_path / "ft"
    out = charlstm_cli.ok("train", "--init-from", base, "--data", tmp_path / "other.txt",
                          "--out", ft, "--max-steps", 2, "--unknown", "skip",
                          "--seq-len", 8, "--batch-size", 2)
    assert "2 characters of the text left out (--unknown skip)" in out
    assert load_checkpoint(ft / "last.safetensors").vocab == charlstm.load(base).vocab.chars
    # eval reads the run's --unknown, so it reproduces the run's validation loss
    result = json.loads(charlstm_cli.ok("eval", ft, "--json"))
    assert result["skipped"] == 2  # both at the end of the text: in the validation split
    assert result["loss"] == pytest.approx(
        load_checkpoint(ft / "best.safetensors").meta["val_loss"], abs=1e-5)
    assert "needs init_from" in charlstm_cli.error(
        "train", "--data", tmp_path / "other.txt", "--unknown", "skip", "--out", tmp_path / "x")


def test_extend_vocab_gives_new_characters_fresh_rows_and_keeps_the_old(
        base, tmp_path, charlstm_cli):
    (tmp_path / "other.txt").write_text(OTHER)
    ft = tmp_path / "ft"
    out = charlstm_cli.ok("train", "--init-from", base, "--data", tmp_path / "other.txt",
                          "--out", ft, "--max-steps", 1, "--lr", 1e-12, "--extend-vocab",
                          "--seq-len", 8, "--batch-size", 2)
    old = charlstm.load(base)
    V = len(old.vocab.chars)
    assert f"vocabulary {V} + 2 new characters (--extend-vocab)" in out
    tuned = load_checkpoint(ft / "last.safetensors")
    assert tuned.vocab == old.vocab.chars + ["Z", "ü"]
    for name, value in old.params.items():
        new = tuned.params[name]
        np.testing.assert_allclose(new[tuple(slice(0, n) for n in value.shape)], value,
                                   atol=1e-9)
    assert tuned.params["lstm.weight_ih_l0"].shape[1] == V + 2
    assert tuned.params["decoder.weight"].shape[0] == V + 2
    charlstm_cli.ok("train", "--resume", ft, "--max-steps", 3)
    assert "Z" in charlstm_cli.ok("sample", ft, "--prime", "Zeb", "--length", 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_an_extended_model_passes_the_finite_difference_gradient_check(cell):
    small = ModelConfig(vocab_size=5, hidden_size=4, num_layers=2, cell=cell)
    params, _, _, state, _ = random_problem(small, 4, 3, seed=5)
    big = replace(small, vocab_size=7)
    grown = extend_params(params, big, seed=9, dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 7, size=(4, 3))
    y = rng.integers(0, 7, size=(4, 3))
    x[0, 0], y[1, 1] = 5, 6  # the new characters, as input and as target
    rows = check_gradients(grown, big, x, y, state)
    for row in rows:
        assert row.max_rel_error < 1e-7, row
        assert row.max_abs_grad > 0.0, row


def test_an_extended_model_gives_old_characters_the_same_logits_at_step_0():
    """What is provable: the old characters' logits, on a text of old characters, are
    the old model's (the new input columns are never read, the old decoder rows are
    unchanged), so their log-probabilities differ from the old model's by one constant
    per position: the log of the softmax normaliser's new share. Their ranking, and
    every ratio between two of them, are unchanged."""
    small = ModelConfig(vocab_size=5, hidden_size=6, num_layers=2)
    params, x, _, state, _ = random_problem(small, 7, 3, seed=4)
    big = replace(small, vocab_size=8)
    grown = extend_params(params, big, seed=1, dtype=np.float64)
    old_logits, old_state, _ = model.forward(params, small, x, state)
    new_logits, new_state, _ = model.forward(grown, big, x, state)
    np.testing.assert_allclose(new_logits[..., :5], old_logits, rtol=1e-13, atol=1e-13)
    for a, b in zip(old_state, new_state):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)

    def log_softmax(z):
        return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - z.max(-1, keepdims=True)
    shift = log_softmax(new_logits)[..., :5] - log_softmax(old_logits)
    np.testing.assert_allclose(shift, shift[..., :1].repeat(5, -1), atol=1e-12)
    assert np.all(shift < 0)  # the new characters take some probability
    # a new input character does reach the model: its fresh column is read
    x[0, 0] = 6
    moved, _, _ = model.forward(grown, big, x, state)
    assert not np.allclose(moved[0, 0], new_logits[0, 0])


def test_a_run_shorter_than_its_warmup_is_warned_about_and_the_header_says_what_is_inherited(
        base, tmp_path, charlstm_cli):
    args = ["train", "--init-from", base, "--data", tmp_path / "new.txt", "--seq-len", 8,
            "--batch-size", 2, "--epochs", 0.3]
    out = charlstm_cli.ok(*args, "--out", tmp_path / "ft")
    steps = load_checkpoint(tmp_path / "ft/last.safetensors").meta["step"]
    assert f"warning: this run makes {steps} steps, fewer than its 50 warmup steps" in out
    assert f"pass --warmup-steps {max(1, steps // 10)}" in out
    assert "inherited: weights, LSTM 2 x 8" in out
    assert "this run's own: optimiser, lr, schedule, weight decay, EMA" in out
    out = charlstm_cli.ok(*args, "--out", tmp_path / "ft2", "--warmup-steps", steps // 10)
    assert "warmup steps" not in out


def test_a_time_budget_run_that_ends_inside_its_warmup_says_so_at_the_end(
        base, tmp_path, charlstm_cli):
    out = charlstm_cli.ok("train", "--init-from", base, "--data", tmp_path / "new.txt",
                          "--seq-len", 8, "--batch-size", 2, "--out", tmp_path / "ft",
                          "--time-budget", 0.001, "--warmup-steps", 100000)
    step = load_checkpoint(tmp_path / "ft/last.safetensors").meta["step"]
    assert f"the run ended at step {step}, inside its 100000 warmup steps" in out
    assert "this run makes" not in out  # its length was not known before it started
